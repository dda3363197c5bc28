"""The checks of `Image` methods' arguments: each says which argument of which method is wrong and how."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

from ._secret import Secret
from ._volume import Volume
from .exception import InvalidError

_PYTHON_VERSION = re.compile(r"^3\.\d+(\.\d+)?$")


def check_python_version(value: Any, arg: str = "python_version") -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"The `{arg}` argument should be a string, not a {type(value).__name__}.")
    if not _PYTHON_VERSION.match(value):
        raise InvalidError(f'Invalid `{arg}` {value!r}: use a version string like "3.12" or "3.12.4".')
    return value


def flatten_str_args(method: str, arg: str, args: Sequence[Any]) -> list[str]:
    """Accept `"a", "b"` as well as `["a", "b"]`, like Modal."""
    out: list[str] = []
    for item in args:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, (list, tuple)) and all(isinstance(x, str) for x in item):
            out.extend(item)
        else:
            raise InvalidError(f"Image.{method}(): {arg} must only contain strings, got {item!r}")
    return out


def check_env(env: Any, what: str = "Image ENV variables") -> dict[str, str]:
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise InvalidError(f"{what} must be given as a dict[str, str], not {type(env).__name__}")
    bad = [k for k, v in env.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise InvalidError(f"{what} must be strings. Invalid keys: {bad!r}")
    return dict(env)


def check_build_env(env: Any) -> dict[str, str]:
    # Like `@app.function(env=...)`, a None value means "leave unset".
    if isinstance(env, Mapping):
        env = {k: v for k, v in env.items() if v is not None}
    return check_env(env)


def check_secrets(secrets: Any) -> tuple[Secret, ...]:
    if secrets is None:
        return ()
    if not isinstance(secrets, (list, tuple)) or not all(isinstance(s, Secret) for s in secrets):
        raise InvalidError("`secrets=` has to be a list or tuple of `modal.Secret` objects")
    return tuple(secrets)


def check_optional_str(arg: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidError(f"`{arg}` must be a string, not {type(value).__name__}")
    return value


def check_volumes(volumes: Any) -> dict[str, Volume]:
    if volumes is None:
        return {}
    if not isinstance(volumes, Mapping):
        raise InvalidError("`volumes` must be a dict[str, Volume] where the keys are paths")
    out = {}
    for path, vol in volumes.items():
        if not isinstance(vol, Volume):
            raise InvalidError(f"Object of type {type(vol)} mounted at '{path}' is not usable as a volume.")
        out[PurePosixPath(path).as_posix()] = vol
    return out


def absolute_local_path(path: Any) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidError(f"Expected a local file path, got {type(path).__name__}")
    # Resolved now, so that the image means the same thing wherever the working directory moves later.
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def check_ignore(ignore: Any) -> Any:
    if ignore is None or callable(ignore):
        return ignore
    if isinstance(ignore, (list, tuple)) and all(isinstance(p, str) for p in ignore):
        return tuple(ignore)
    raise InvalidError(
        "`ignore` must be a list of glob patterns or a function taking a Path and returning a bool"
    )


def check_remote_path(method: str, remote_path: Any) -> str:
    if not isinstance(remote_path, (str, PurePosixPath)) or not PurePosixPath(remote_path).is_absolute():
        raise InvalidError(f"image.{method}() currently only supports absolute remote_path values")
    text = str(remote_path)
    return PurePosixPath(text).as_posix() + ("/" if text.endswith("/") and text != "/" else "")


def index_options(find_links: Any, index_url: Any, extra_index_url: Any, pre: Any, extra_options: Any) -> dict[str, Any]:
    """The package-index arguments of the pip and uv steps."""
    if not isinstance(extra_options, str):
        raise InvalidError("`extra_options` must be a string of extra command-line options")
    return {
        "find_links": check_optional_str("find_links", find_links),
        "index_url": check_optional_str("index_url", index_url),
        "extra_index_url": check_optional_str("extra_index_url", extra_index_url),
        "pre": bool(pre),
        "extra_options": extra_options,
    }


def run_options(env: Any, secrets: Any, gpu: Any, force_build: Any) -> dict[str, Any]:
    """The arguments of every step that runs something at build time."""
    return {
        "env": check_build_env(env),
        "secrets": check_secrets(secrets),
        "gpu": check_optional_str("gpu", gpu),
        "force_build": bool(force_build),
    }
