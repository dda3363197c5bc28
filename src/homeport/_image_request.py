"""Turn an `Image` into the build request the control plane receives: plain data, no Python objects.

What only this process can know is resolved here: which files an `add_local_*` step selects (its
`ignore` may be a function), where a module named in `add_local_python_source` lives, how the
function of `run_function` is found, and the values of local secrets. The control plane is on this
machine, so files travel as paths; it reads and hashes them itself.

Keys starting with `_` are carried but never hashed into the image's name (paths of the caller's
process, secret values).
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import cloudpickle

from ._image import Image, ImageStep, _thaw
from .exception import InvalidError, UnimplementedError

__all__ = ["build_request", "code_dirs"]

PYTHON_ROOT = "/root"  # where Modal puts `add_local_python_source` modules; it is on sys.path


@functools.cache
def _interpreter_dirs() -> list[str]:
    """Where this interpreter's own files and installed packages live (prefixes, user site): the same
    for the life of the process, worked out once (each function of a module asks, and a container's
    cold start imports the module)."""
    import site

    dirs = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    try:
        dirs.add(os.path.realpath(site.getuserbase()))
    except Exception:  # pragma: no cover - site without a user base
        pass
    return sorted(dirs)


def _installed(path: str, interpreter_dirs: list[str]) -> bool:
    real = os.path.realpath(path)
    if any(part in ("site-packages", "dist-packages") for part in real.split(os.sep)):
        return True
    return any(real == d or real.startswith(d.rstrip(os.sep) + os.sep) for d in interpreter_dirs)


def import_root(module_name: str, module_file: str) -> str:
    """The directory `module_name` is imported from: its file's directory, above its package if it has one
    (`/src/pkg/sub/mod.py` named `pkg.sub.mod` -> `/src`)."""
    path = os.path.abspath(module_file)
    root = os.path.dirname(path)
    if module_name in ("__main__", "__mp_main__"):
        return root
    parts = module_name.split(".")
    if os.path.basename(path) == "__init__.py":
        parts = [*parts, "__init__"]
    for part in reversed(parts[:-1]):
        if os.path.basename(root) != part:  # not laid out like its name (loaded from a file): the directory
            return os.path.dirname(path)
        root = os.path.dirname(root)
    return root


def code_dirs(module_name: str | None, module_file: str | None, cwd: str | None = None) -> list[str]:
    """The caller's own source directories that a container of its function puts on sys.path.

    Like Modal, which mounts the entrypoint's module or package and nothing else of the caller's: the
    directory the function's module is imported from (the root of its package) and the working
    directory. Never the caller's installed packages, site-packages or editable installs (`.pth` paths,
    `__editable__` finders), nor other directories of its sys.path or PYTHONPATH: a container gets its
    packages from its image, and other local modules with `Image.add_local_python_source`.
    """
    interpreter = _interpreter_dirs()
    out: list[str] = []
    if module_file and module_name:
        root = import_root(module_name, module_file)
        if not _installed(root, interpreter):
            out.append(root)
    cwd = os.getcwd() if cwd is None else cwd
    if cwd not in out and not _installed(cwd, interpreter):
        out.append(cwd)
    return out


# --- ignore patterns (dockerignore style, like Modal's FilePatternMatcher) ---------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(c, re.escape(c))
        i += 1
    # A pattern that names a directory also covers everything under it.
    return re.compile(out + "(?:/.*)?")


Predicate = Callable[[PurePosixPath, bool], bool]  # (path relative to the directory, is a directory)


def _ignore_predicate(ignore: Any) -> Predicate:
    if ignore is None:
        return lambda rel, is_dir: False
    if callable(ignore):
        return lambda rel, is_dir: bool(ignore(Path(rel)))
    rules = []
    for raw in ignore:
        pat = raw.strip()
        if not pat or pat.startswith("#"):
            continue
        negate = pat.startswith("!") or pat.startswith("~")
        pat = pat[1:] if negate else pat
        pat = pat.strip("/")
        rules.append((_pattern_regex(os.path.normpath(pat).replace(os.sep, "/")), negate))

    def ignored(rel: PurePosixPath, is_dir: bool) -> bool:
        result = False
        for regex, negate in rules:
            if regex.fullmatch(rel.as_posix()):
                result = not negate
        return result

    return ignored


def _walk(local: str, target: str, ignored: Predicate) -> tuple[list[list[str]], list[str]]:
    """Files (`[target, source]`) and directories (targets) under `local`, minus the ignored ones."""
    files: list[list[str]] = []
    dirs = [target]
    for root, dirnames, filenames in os.walk(local, followlinks=True):
        rel_root = PurePosixPath(os.path.relpath(root, local).replace(os.sep, "/"))
        kept = []
        for d in sorted(dirnames):
            rel = rel_root / d if str(rel_root) != "." else PurePosixPath(d)
            if not ignored(rel, True):
                kept.append(d)
                dirs.append(str(PurePosixPath(target) / rel))
        dirnames[:] = kept
        for name in sorted(filenames):
            rel = rel_root / name if str(rel_root) != "." else PurePosixPath(name)
            if not ignored(rel, False):
                files.append([str(PurePosixPath(target) / rel), os.path.join(root, name)])
    return files, dirs


def _non_python(rel: PurePosixPath, is_dir: bool) -> bool:
    """The default `ignore` of `add_local_python_source` (Modal's NON_PYTHON_FILES): all but `.py` files."""
    if rel.name == "__pycache__" or rel.name.startswith("."):
        return True
    return not is_dir and rel.suffix != ".py"


def _module_files(module: str, ignore: Any) -> tuple[list[list[str]], list[str]]:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        raise InvalidError(f"Image.add_local_python_source(): module {module!r} cannot be found here: {exc}") from None
    if spec is None:
        raise InvalidError(
            f"Image.add_local_python_source(): there is no module {module!r} on this machine's import path"
        )
    target = str(PurePosixPath(PYTHON_ROOT, *module.split(".")))
    if spec.submodule_search_locations:
        local = next(iter(spec.submodule_search_locations))
        return _walk(local, target, _non_python if ignore is None else _ignore_predicate(ignore))
    if not spec.origin or not os.path.isfile(spec.origin):
        raise InvalidError(
            f"Image.add_local_python_source(): {module!r} is not a module made of a source file ({spec.origin})"
        )
    return [[target + ".py", spec.origin]], []


# --- steps ----------------------------------------------------------------------------------------


def _secrets(params: dict[str, Any]) -> None:
    secrets = params.pop("secrets", ()) or ()
    env: dict[str, str] = {}
    refs = []
    for s in secrets:
        if s.is_local:
            env.update(s.local_values or {})
        else:
            refs.append({"name": s.name, "required_keys": list(s.required_keys)})
    params["secrets"] = [s.fingerprint() for s in secrets]
    params["secret_refs"] = refs
    params["_secret_env"] = env


def _no_volumes(kind: str, params: dict[str, Any]) -> None:
    volumes = params.pop("volumes", None)
    if volumes:
        raise UnimplementedError(
            f"Image.{kind}(volumes=...) is not supported by Homeport yet: build steps cannot mount volumes. "
            "Remove `volumes=` from the build step and read the data in the function instead."
        )


def _function_ref(fn: Callable[..., Any]) -> dict[str, Any]:
    module_name = getattr(fn, "__module__", None) or "__main__"
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    module_file = os.path.abspath(path) if path else None
    qualname = getattr(fn, "__qualname__", getattr(fn, "__name__", "?"))
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        source = None
    by_value = module_file is None or "<locals>" in qualname
    return {
        "module_name": module_name,
        "qualname": qualname,
        "source": source,
        "_module_file": module_file,
        "_serialized": cloudpickle.dumps(fn) if by_value else None,
        "_sys_path": code_dirs(module_name, module_file),
        "_cwd": os.getcwd(),
    }


def _step(step: ImageStep) -> dict[str, Any]:
    kind = step.kind
    params = _thaw(dict(step.params))
    if "secrets" in params:
        _secrets(params)
    if kind in ("run_commands", "run_function"):
        _no_volumes(kind, params)
    if kind == "from_registry":
        secret = params.pop("secret", None)
        params["registry_secret"] = secret.fingerprint() if secret is not None else None
    elif kind == "add_local_file":
        params["files"] = [[params["remote_path"], params["local_path"]]]
        params["dirs"] = []
        if not os.path.isfile(params["local_path"]):
            raise InvalidError(f"Image.add_local_file(): {params['local_path']} is not a file")
    elif kind == "add_local_dir":
        if not os.path.isdir(params["local_path"]):
            raise InvalidError(f"Image.add_local_dir(): {params['local_path']} is not a directory")
        ignore = params.pop("ignore", None)
        params["files"], params["dirs"] = _walk(
            params["local_path"], params["remote_path"], _ignore_predicate(ignore)
        )
    elif kind == "add_local_python_source":
        ignore = params.pop("ignore", None)
        files: list[list[str]] = []
        dirs: list[str] = []
        for module in params["modules"]:
            f, d = _module_files(module, ignore)
            files += f
            dirs += d
        params["files"], params["dirs"] = files, dirs
        params["python_root"] = PYTHON_ROOT
    elif kind == "run_function":
        params["function"] = _function_ref(params["function"])
        try:
            params["args"] = cloudpickle.dumps((tuple(params.pop("args", ())), dict(params.pop("kwargs", {}))))
        except Exception as exc:
            raise InvalidError(f"Image.run_function(): the arguments cannot be serialized: {exc}") from None
    return {"kind": kind, **params}


def build_request(image: Image) -> dict[str, Any]:
    """The message body of one image build: `{"steps": [...], "image_hash": ...}`."""
    return {"steps": [_step(s) for s in image.steps], "image_hash": image.content_hash()}


def distinct(images: Iterable[Image]) -> list[Image]:
    out: list[Image] = []
    for image in images:
        if image not in out:
            out.append(image)
    return out


