"""Pickling for inputs and outputs: the standard pickle for plain data, cloudpickle for the rest.

cloudpickle's pickler costs microseconds to set up, which dominates for the small values a `.map()`
moves by the hundred thousand; plain data (numbers, strings, bytes, and small lists, tuples and dicts of
them) pickles the same either way, and cloudpickle reads both. A leaf module: the SDK and the runtime
both use it.
"""

from __future__ import annotations

import pickle
from typing import Any

import cloudpickle

_ATOMS = (int, float, str, bytes, bool, type(None))
ATOMS = frozenset(_ATOMS)  # values that pickle the same with the standard pickle
_MAX_ITEMS = 64


def _plain(value: Any, depth: int = 0) -> bool:
    t = type(value)
    if t in _ATOMS:
        return True
    if depth > 2:
        return False
    # Loops rather than `all(...)` over a generator, and atoms tested inline: this runs for every
    # input of a `.map()` (the profile's top client-side line for trivial inputs).
    if t is tuple or t is list:
        if len(value) > _MAX_ITEMS:
            return False
        for v in value:
            if type(v) not in _ATOMS and not _plain(v, depth + 1):
                return False
        return True
    if t is dict:
        if len(value) > _MAX_ITEMS:
            return False
        for k, v in value.items():
            if type(k) not in _ATOMS or (type(v) not in _ATOMS and not _plain(v, depth + 1)):
                return False
        return True
    return False


def is_plain(value: Any) -> bool:
    """Whether `value` pickles the same with the standard pickle (see the module's docstring)."""
    return _plain(value)


def dumps(value: Any) -> bytes:
    if _plain(value):
        return pickle.dumps(value, protocol=5)
    return cloudpickle.dumps(value)


loads = cloudpickle.loads
