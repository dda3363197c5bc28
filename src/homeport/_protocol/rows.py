"""The rows inside messages: inputs and outputs, one definition for every loop that makes or reads them.

Rows travel as msgpack arrays (`array_like`), as compact as the positional lists they replace, and a
row of an older peer without the trailing optional fields still decodes.
"""

from __future__ import annotations

from typing import Any

from ._msgspec import Struct


class CallInput(Struct, array_like=True, forbid_unknown_fields=True):
    """Client -> control plane (CALL, MAP_PUT): one input of a call."""

    idx: int  # its position in the call (a map's order)
    args: bytes  # the pickled (args, kwargs)
    method: str | None  # a class's method name, or None for a function


class InputRow(Struct, array_like=True):
    """Control plane -> container (INPUTS): one input to run."""

    iid: int  # the control plane's id of the input
    args: bytes
    method: str | None
    call_id: str | None = None  # `modal.current_function_call_id()`


class OutputRow(Struct, array_like=True, omit_defaults=True):
    """Container -> control plane (CONTAINER_OUTPUTS): what one input came to."""

    iid: int
    status: int  # SUCCESS, FAILURE, ... (see the output statuses in `homeport._protocol`)
    data: Any  # pickled result; a failure map; a generator's item count; None (cancelled)
    seconds: float = 0.0  # wall time the input took
    cpu: float | None = None  # CPU time of the thread that ran it, where it is known


class CallOutput(Struct, array_like=True):
    """Control plane -> client (OUTPUTS): the output of one input of a call."""

    idx: int
    status: int
    data: Any


class VolumeFile(Struct, array_like=True):
    """One file of a volume put: [path, bytes]."""

    path: str
    data: bytes
