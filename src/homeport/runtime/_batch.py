"""Dynamic batching (`@modal.batched`): single-item calls become one call with a list per parameter.

Pure helpers, unit-tested without a container: `zip_inputs` turns the (args, kwargs) of each input into
one list per parameter; `check_outputs` validates what the user function returned.
"""

from __future__ import annotations

import inspect
from typing import Any


class BatchError(Exception):
    """An input of a batch does not fit the function's parameters (fails every input of the batch)."""


def zip_inputs(fn: Any, name: str, calls: list[tuple[tuple, dict]]) -> list[list[Any]]:
    """One list per parameter of `fn`, aligned across `calls`."""
    params = [
        p for p in inspect.signature(fn).parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    names = [p.name for p in params]
    columns: list[list[Any]] = [[] for _ in names]
    for args, kwargs in calls:
        if len(args) > len(names):
            raise BatchError(
                f"Modal batched function {name} takes {len(names)} positional arguments, but one invocation "
                f"in the batch has {len(args)}."
            )
        values = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in names:
                raise BatchError(f"Modal batched function {name} got unexpected keyword argument {key} in one invocation.")
            if key in values:
                raise BatchError(f"Modal batched function {name} got multiple values for argument {key} in one invocation.")
            values[key] = value
        missing = [n for n in names if n not in values]
        if missing:
            raise BatchError(
                f"Modal batched function {name} is missing argument {missing[0]} in one invocation of the batch."
            )
        for column, n in zip(columns, names):
            column.append(values[n])
    return columns


def check_outputs(name: str, outputs: Any, n: int) -> list[Any]:
    if not isinstance(outputs, list):
        raise BatchError(f"Output of batched function {name} must be a list.")
    if len(outputs) != n:
        raise BatchError(
            f"Output of batched function {name} must be a list of equal length as its inputs "
            f"(got {len(outputs)} outputs for {n} inputs)."
        )
    return outputs
