"""Content addresses of image layers: pure functions of an image's build steps. No I/O.

An image is a base step (`debian_slim`) followed by build steps. Layer `i` is named by the hash of
layer `i-1`'s name and step `i`'s canonical description, so a changed step renames its own layer and
every later one, while the layers before it keep their names and are reused:

    key[0] = H(salt, step[0])          key[i] = H(key[i-1], step[i])

Steps that add local files without `copy=True` are not layers: they are put in place when a container
starts, so changing such a file never rebuilds anything (`split_mounts`).

The image builder (`homeport.image_builder.plan`) fills in what a step means on this machine before it is
hashed here: the interpreter `debian_slim` resolved to, the digests of requirement files and copied
files. Secret values and `force_build` never count.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

__all__ = [
    "LAYER_FORMAT",
    "describe",
    "first_to_build",
    "image_id",
    "layer_keys",
    "split_mounts",
    "step_digest",
]

# Bump when what a built layer holds, or how a step is built, changes: every layer is then rebuilt.
LAYER_FORMAT = "homeport-image-layer/1"
# Parameters that change how a step runs, not what it produces. Keys starting with `_` (at any depth)
# are never hashed either: paths of the caller's process, and secret values, which must not be
# recoverable from (or guessable through) a layer's name.
UNHASHED = frozenset({"force_build", "timeout", "cpu", "memory", "gpu"})
LOCAL_KINDS = frozenset({"add_local_file", "add_local_dir", "add_local_python_source"})


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"sha256": hashlib.sha256(bytes(value)).hexdigest()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"an image step holds a value of type {type(value).__name__}, which has no canonical form")


def canonical(step: Mapping[str, Any]) -> bytes:
    """One byte string per step meaning, whatever the key order; unhashed parameters left out."""
    data = {k: v for k, v in step.items() if k not in UNHASHED}
    return json.dumps(_jsonable(data), sort_keys=True, separators=(",", ":")).encode()


def step_digest(step: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(step)).hexdigest()


def layer_keys(steps: Sequence[Mapping[str, Any]], salt: str = LAYER_FORMAT) -> list[str]:
    """The name of the layer after each step, each chained to the one before."""
    keys: list[str] = []
    previous = hashlib.sha256(salt.encode()).hexdigest()
    for step in steps:
        h = hashlib.sha256(previous.encode())
        h.update(canonical(step))
        previous = h.hexdigest()
        keys.append(previous)
    return keys


_Step = TypeVar("_Step", bound=Mapping[str, Any])


def split_mounts(steps: Sequence[_Step]) -> tuple[list[_Step], list[_Step]]:
    """(layer steps, steps that add local files at container start). The SDK keeps the latter last."""
    layers = [s for s in steps if not (s["kind"] in LOCAL_KINDS and not s.get("copy"))]
    mounts = [s for s in steps if s["kind"] in LOCAL_KINDS and not s.get("copy")]
    return layers, mounts


def first_to_build(keys: Sequence[str], is_built: Callable[[str], bool], forced: Sequence[bool]) -> int:
    """The index of the first layer to build: after the deepest layer already built, and no later
    than the first step with `force_build=True`. `len(keys)` when the whole image is cached."""
    limit = next((i for i, f in enumerate(forced) if f), len(keys))
    for i in range(min(limit, len(keys)) - 1, -1, -1):
        if is_built(keys[i]):
            return i + 1
    return 0


def image_id(final_key: str, mounts_key: str | None) -> str:
    """The id of an image: its last layer and the local files it adds at container start."""
    h = hashlib.sha256(final_key.encode())
    if mounts_key:
        h.update(b"\0" + mounts_key.encode())
    return "im-" + h.hexdigest()[:24]


def describe(step: Mapping[str, Any]) -> str:
    """A short label for logs and errors, like `pip_install('six==1.16.0')`."""
    kind = step["kind"]
    main = (
        step.get("packages")
        or step.get("commands")
        or step.get("modules")
        or ([step["python_version"]] if kind == "debian_slim" and step.get("python_version") else None)
    )
    if main:
        shown = ", ".join(repr(x) for x in list(main)[:4])
        if len(main) > 4:
            shown += f", ... ({len(main)} in all)"
        return f"{kind}({shown})"
    if kind == "run_function" and isinstance(step.get("function"), Mapping):
        return f"run_function({step['function'].get('qualname')})"
    for key in ("requirements_txt", "pyproject_toml", "path", "remote_path"):
        if step.get(key):
            return f"{kind}({step[key]!r})"
    if kind == "env" and step.get("vars"):
        return f"env({', '.join(sorted(step['vars']))})"
    return f"{kind}()"
