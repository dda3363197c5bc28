"""The rows inside messages: inputs and outputs, one definition for every loop that makes or reads them.

Rows travel as msgpack arrays (`array_like`), as compact as the positional lists they replace, and a
row of an older peer without the trailing optional fields still decodes.
"""

from __future__ import annotations

from typing import Any

from ._msgspec import Struct

# Which positional arguments of a map's input may travel as themselves in a chunk (`CallInput.args`):
# values msgpack gives back as they were (an int in 64 bits; a str of ASCII, as any other may hold what
# UTF-8 cannot encode), short, at most this many.
PLAIN_ARGS = 16
PLAIN_ARG_BYTES = 256
PLAIN_INT = 1 << 63


class CallInput(Struct, array_like=True, forbid_unknown_fields=True):
    """Client -> control plane (CALL, MAP_PUT): one input of a call, or a map's chunk of consecutive inputs.

    A chunk's `args` is a list with one entry per input `idx`, `idx + 1`, ...: its pickled (args, kwargs),
    each pickled on its own, so that the control plane can hand out any part of it (or one input again,
    for a retry) without unpickling anything; or, for an input with no keyword arguments whose positional
    arguments are all plain values (see `PLAIN_ARGS`), those arguments themselves, as an array (nobody
    pickles them; the control plane pickles one only where it becomes an input of its own)."""

    idx: int  # its position in the call (a map's order); a chunk's first input's
    args: bytes | list[bytes | list[Any]]  # the pickled (args, kwargs); a chunk's, one per input
    method: str | None  # a class's method name, or None for a function


class InputRow(Struct, array_like=True):
    """Control plane -> container (INPUTS): one input to run, or a chunk of inputs run one after another.

    A chunk's `args` is a list, one per input; the container runs each input on its own (its own timer,
    its own output) and reports them in `ChunkOutputRow`s under the chunk's `iid`, each by its position
    in this list (the control plane knows which inputs of the chunk it sent)."""

    iid: int  # the control plane's id of the input (of the chunk)
    args: bytes | list[bytes | list[Any]]  # (as `CallInput.args`)
    method: str | None
    call_id: str | None = None  # `modal.current_function_call_id()`


class OutputRow(Struct, array_like=True, omit_defaults=True):
    """Container -> control plane (CONTAINER_OUTPUTS): what one input came to."""

    iid: int
    status: int  # SUCCESS, FAILURE, ... (see the output statuses in `homeport._protocol`)
    data: Any  # pickled result; a failure map; a generator's item count; None (cancelled)
    seconds: float = 0.0  # wall time the input took
    cpu: float | None = None  # CPU time of the thread that ran it, where it is known


class ChunkOutputRow(Struct, array_like=True):
    """Container -> control plane (CONTAINER_OUTPUTS): what some inputs of one chunk came to, in the order
    they ran (a long chunk reports as it goes).

    A success's data is its pickled result, or the result itself where it is a plain value as
    `CallInput.args` has them, other than bytes (an int in 64 bits, a float, a bool, None, a short ASCII
    str): bytes are always a pickle. The control plane passes it on as it is (`CallChunkOutput`)."""

    iid: int  # the chunk's id
    keys: list[int]  # each input's position in the chunk's `InputRow.args`
    status: list[int]  # each one's status
    data: list[Any]  # each one's data (as `OutputRow.data`; a success's plain value may be itself, see below)
    seconds: float  # wall time these inputs took together
    cpu: float | None = None


class CallOutput(Struct, array_like=True):
    """Control plane -> client (OUTPUTS): the output of one input of a call."""

    idx: int
    status: int
    data: Any


class CallChunkOutput(Struct, array_like=True):
    """Control plane -> client (OUTPUTS): the outputs of some inputs of a map's chunk: input `idx + key`
    for each key, with its status and data (as `CallOutput`)."""

    idx: int
    keys: list[int]
    status: list[int]
    data: list[Any]


class VolumeFile(Struct, array_like=True):
    """One file of a volume put: [path, bytes]."""

    path: str
    data: bytes
