"""An image's build steps as data (`ImageStep`), and the content hash that names what a list of them builds.

The `Image` builder (`_image`) makes the steps; the image builder and the request sent to it
(`_image_request`) read them.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ._secret import Secret
from ._volume import Volume

BASE_KINDS = frozenset({"debian_slim", "from_registry"})
LOCAL_KINDS = frozenset({"add_local_file", "add_local_dir", "add_local_python_source"})
# Parameters that change how a step is built but not what it produces.
_UNHASHED_PARAMS = frozenset({"force_build"})
# Steps whose result depends on a local file's bytes, not just its path.
_FILE_CONTENT_PARAMS = {
    "pip_install_from_requirements": "requirements_txt",
    "pip_install_from_pyproject": "pyproject_toml",
}


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class ImageStep:
    """One build step: its `kind` (the Image method that made it) and that method's arguments."""

    kind: str
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)

    @classmethod
    def make(cls, kind: str, **params: Any) -> ImageStep:
        return cls(kind, _freeze(params))

    def get(self, key: str, default: Any = None) -> Any:
        return self.params.get(key, default)

    @property
    def is_mount(self) -> bool:
        """Local files added with `copy=False`: mounted at container start, not built into the image."""
        return self.kind in LOCAL_KINDS and not self.params.get("copy", False)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **_thaw(self.params)}



# --- hashing --------------------------------------------------------------------------------------


def _callable_identity(fn: Any) -> dict[str, Any]:
    name = f"{getattr(fn, '__module__', None)}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        source = None
    return {"callable": name, "source": source}


def _canonical(obj: Any) -> Any:
    if isinstance(obj, Secret):
        return {"secret": obj.fingerprint()}
    if isinstance(obj, Volume):
        return {"volume": obj.to_dict()}
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if callable(obj):
        return _callable_identity(obj)
    return {"repr": repr(obj)}


def _file_digest(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def _hashable_step(step: ImageStep) -> dict[str, Any]:
    data = {k: v for k, v in step.to_dict().items() if k not in _UNHASHED_PARAMS}
    path_param = _FILE_CONTENT_PARAMS.get(step.kind)
    if step.kind == "add_local_file" and step.get("copy"):
        path_param = "local_path"
    if path_param is not None:
        data["content_sha256"] = _file_digest(step.get(path_param))
    return data



def steps_hash(steps: Sequence[ImageStep]) -> str:
    """A sha256 hex digest naming what these steps build.

    Requirement files and copied single files count by their bytes; directories by their path.
    """
    payload = json.dumps(
        [_hashable_step(s) for s in steps],
        sort_keys=True,
        separators=(",", ":"),
        default=_canonical,
    )
    return hashlib.sha256(payload.encode()).hexdigest()
