"""The runtime's own packages in every image: directories of links to the control plane's copies.

An image's environment never holds Homeport: a `.pth` file (`PTH_NAME`, written by the base layer)
appends the directories named by `HOMEPORT_RUNTIME_PATH` to `sys.path` after the image's packages, so a
version the image pins wins, and makes `import modal` resolve to Homeport in every process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

from .. import _protocol as P

RUNTIME_PACKAGES = ("homeport", "cloudpickle", "msgpack", "msgspec", "_homeport_modal")
# What a web container's HTTP server runs on, with everything these require: an image that installs
# its own versions (of FastAPI, say) gets those first.
WEB_DISTRIBUTIONS = ("fastapi", "uvicorn", "httptools", "uvloop", "a2wsgi", "websockets")
PTH_NAME = "_homeport_runtime.pth"
PTH_LINE = (
    f"import os, sys; sys.path.extend(p for p in os.environ.get({P.ENV_RUNTIME_PATH!r}, '').split(os.pathsep) "
    "if p and p not in sys.path); "
    # `import modal` in every process of a container, its subprocesses too (see `_homeport_modal`).
    f"[__import__('_homeport_modal') for p in os.environ.get({P.ENV_RUNTIME_PATH!r}, '').split(os.pathsep)[:1] "
    "if p and os.path.isdir(os.path.join(p, '_homeport_modal'))]\n"
)


class RuntimeLinks:
    """The runtime directories under a builder's root (`runtime/<key>/`, `runtime-web/<key>/`), made once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._runtime_path: str | None = None
        self._web_runtime_path: str | None = None
        self.made: set[str] = set()  # the paths `path` returned (each names what it links to)

    def path(self, web: bool = False) -> str:
        """Directories holding only the runtime's packages (links to the control plane's own), joined
        with `os.pathsep`; `web`: also what web endpoints are served with (uvicorn, FastAPI, a2wsgi and
        what they need), which only web containers see."""
        if self._runtime_path is None:
            self._runtime_path = self._link_dir("runtime", _module_sources(RUNTIME_PACKAGES))
        if not web:
            self.made.add(self._runtime_path)
            return self._runtime_path
        if self._web_runtime_path is None:
            sources = _distribution_sources(WEB_DISTRIBUTIONS)
            for name in os.listdir(self._runtime_path):
                sources.pop(name, None)
            self._web_runtime_path = self._link_dir("runtime-web", sources)
        path = self._runtime_path + os.pathsep + self._web_runtime_path
        self.made.add(path)
        return path

    def _link_dir(self, kind: str, sources: dict[str, str]) -> str:
        key = hashlib.sha256(json.dumps(sources, sort_keys=True).encode()).hexdigest()[:16]
        target = self.root / kind / key
        if not target.exists():
            tmp = self.root / kind / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir(parents=True)
            for name, src in sources.items():
                os.symlink(src, tmp / name)
            try:
                os.rename(tmp, target)
            except OSError:  # another control plane made it first
                shutil.rmtree(tmp, ignore_errors=True)
        return str(target)


def runtime_sources(runtime_path: str) -> tuple[str, ...]:
    """Where the packages of a runtime path (`RuntimeLinks.path()`) really are: its entries link to the
    control plane's own, which an isolated container must keep in view (read-only) wherever they
    live (a virtual environment under /tmp, say)."""
    out = []
    for d in runtime_path.split(os.pathsep):
        with contextlib.suppress(OSError):
            for name in os.listdir(d):
                out.append(os.path.realpath(os.path.join(d, name)))
    return tuple(dict.fromkeys(out))


def _module_sources(names: tuple[str, ...]) -> dict[str, str]:
    import importlib.util

    sources = {}
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"the runtime package {name} is not importable by the control plane")
        sources[name] = os.path.realpath(next(iter(spec.submodule_search_locations)))
    return sources


def _distribution_sources(roots: tuple[str, ...]) -> dict[str, str]:
    """The top-level modules and packages (name -> real path) of these distributions and of every
    distribution they require (extras left out), as installed beside the control plane."""
    import importlib.metadata as md

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    sources: dict[str, str] = {}
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # an optional speed-up (httptools, uvloop) that is not installed
        for req in dist.requires or ():
            r = Requirement(req)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
        for f in dist.files or ():
            top = f.parts[0]
            if top in ("..", "__pycache__") or top.endswith((".dist-info", ".egg-info", ".pth", ".data")):
                continue
            if len(f.parts) == 1 and not top.endswith((".py", ".so", ".pyd")):
                continue
            path = os.path.realpath(str(dist.locate_file(top)))
            if os.path.exists(path):
                sources.setdefault(top, path)
    return sources
