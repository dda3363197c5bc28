"""The image builder: turns an image's build steps into a Python environment, once, and caches it.

Layout under the control plane's state directory (`images/`):

    layers/<key>/layer.json   the manifest of one layer, written last (a layer without it does not exist)
    layers/<key>/venv/        the image's virtual environment (uv, relocatable), when this layer changed it
    layers/<key>/fs/          files the image adds at absolute paths (`copy=True`), under their path
    mounts/<key>/fs/          local files added at container start (`copy=False`), staged by stat
    images/<id>.json          an image: its last layer and its staged local files
    runtime/<key>/            the runtime's own packages (homeport, cloudpickle, msgpack) as links

A layer is named by `core.image_layers` from its step and the layer before it. Each `layer.json`
carries everything the image is at that point (interpreter, environment variables, working directory,
which layer holds its files), so resolving an image reads one file. Layers that only change metadata
(`env`, `workdir`) share the files of the layer before them; the others start from a copy of it:
hard links for steps whose writes Homeport controls (uv replaces files, never edits them in place), a
full copy before a step that runs user code.

Packages are installed with uv into the image's own environment, which never sees the control plane's
or the caller's site-packages. The runtime's own modules come from `runtime/`, appended to sys.path by
a `.pth` file after the image's packages (so a version the image pins wins).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from .. import _protocol as P
from ..backends import Mount
from .core import image_layers as L
from .interpreters import Interpreters, NoInterpreter
from .rootfs import DEBIAN_PATH, ROOTFS_INTERPRETERS, DebianBase, RootfsUnavailable, interpreter_prefix

log = logging.getLogger("homeport.server.images")

LogFn = Callable[[str, int], None]  # (line, fd)
# (argv, env, rootfs, mounts, out, timeout, cwd) -> exit code: runs a build step as a container of the
# backend; without a root file system (None) the host is read-only inside and only the mounts are writable.
RunContainer = Callable[[list[str], dict[str, str], str | None, list[Mount], LogFn, float, str | None],
                        Awaitable[int | None]]
TAIL_LINES = 40
INSTALL_TIMEOUT = 3600.0
RUNTIME_PACKAGES = ("homeport", "cloudpickle", "msgpack", "_homeport_modal")
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
# Interpreter settings of the control plane's own environment that must not reach the build tools.
_INTERPRETER_VARS = frozenset({
    "PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONSTARTUP", "PYTHONEXECUTABLE", "VIRTUAL_ENV",
    "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "__PYVENV_LAUNCHER__", "PYTHONNOUSERSITE",
})
# All that a container keeps of the environment of whoever started the control plane: what any process
# expects to find (where programs are, whose session it is, how to print text). Everything else there
# (credentials exported in that shell, its interpreter's settings) stays out; a function gets variables
# only from its image's `env`, its secrets and its `env=`.
BASE_ENV_VARS = frozenset({"PATH", "HOME", "LANG", "LANGUAGE", "TERM", "TZ", "USER", "LOGNAME"})


def base_environ(server_env: Mapping[str, str]) -> dict[str, str]:
    """The allowlisted part of the control plane's environment (`BASE_ENV_VARS` and the `LC_*` locale)."""
    return {k: v for k, v in server_env.items() if k in BASE_ENV_VARS or k.startswith("LC_")}
FILE_KINDS = frozenset({"add_local_file", "add_local_dir", "add_local_python_source"})
ROOTFS_KINDS = frozenset({"apt_install", "run_commands"})  # steps that give an image its own root file system
NODE_UNBUILDABLE = ROOTFS_KINDS | {"run_function"}  # steps only the control plane's builder runs
INSTALL_KINDS = frozenset({"pip_install", "uv_pip_install", "pip_install_from_requirements",
                           "pip_install_from_pyproject"})


class ImageBuildFailed(Exception):
    """A step failed; the message names it and shows the tail of its output (ImageBuildError)."""

    code = "image_build"


class ImageUnsupported(Exception):
    """A step this machine cannot build; the message says what is missing (UnimplementedError)."""

    code = "unimplemented"


class ImageNotFound(LookupError):
    pass


@dataclass
class Plan:
    """An image request as this machine builds it (`ImageBuilder.plan`): its steps, filled in with
    what they mean here (the interpreter, file digests), and the names of its layers."""

    steps: list[dict[str, Any]]
    layer_steps: list[dict[str, Any]]
    mount_steps: list[dict[str, Any]]
    keys: list[str]


@dataclass
class BuiltImage:
    """What a container of an image runs with."""

    image_id: str
    layer: str
    venv: str
    python_version: str
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    python_path: list[str] = field(default_factory=list)  # staged python sources (Modal's /root)
    mounts: list[tuple[str, str]] = field(default_factory=list)  # (host source, container target)
    rootfs_lower: list[str] | None = None  # overlay layers, top first: the image has its own root fs
    interpreter_prefix: str | None = None  # bound into the root fs, where the venv's interpreter lives
    rootfs_scratch: str | None = None
    # Its layer steps as planned here (what names its layers), for a node that builds it in its own
    # cache (`node_steps`); None for an image built before they were recorded.
    steps: list[dict[str, Any]] | None = None

    @property
    def python(self) -> str:
        return os.path.join(self.venv, "bin", "python")

    def argv(self) -> tuple[str, ...]:
        return (self.python, "-m", "homeport.runtime")

    def environ(self, server_env: Mapping[str, str], runtime_path: str) -> dict[str, str]:
        """The environment every container of this image starts from (before its function's own)."""
        env = base_environ(server_env)
        env["VIRTUAL_ENV"] = self.venv
        system_path = DEBIAN_PATH if self.rootfs_lower else env.get("PATH", os.defpath)
        env["PATH"] = os.path.join(self.venv, "bin") + os.pathsep + system_path
        env["PYTHONNOUSERSITE"] = "1"
        env[P.ENV_RUNTIME_PATH] = runtime_path
        env.update(self.env)
        path = [p for p in self.env.get("PYTHONPATH", "").split(os.pathsep) if p] + self.python_path
        if path:
            env["PYTHONPATH"] = os.pathsep.join(path)
        return env

    def container_mounts(self) -> list[Mount]:
        return [Mount(source, target, read_only=False) for source, target in self.mounts]

    def cwd(self, default: str | None) -> str | None:
        return self.workdir or default

    def rootfs(self, cwd: str | None) -> str | None:
        """`ContainerSpec.rootfs` for containers of this image (writes go to a fresh tmpfs)."""
        if not self.rootfs_lower:
            return None
        return json.dumps({"lower": self.rootfs_lower, "upper": None, "work": None,
                           "scratch": self.rootfs_scratch, "cwd": cwd or "/"})

    def rootfs_mounts(self, code_dirs: list[str], socket: str, runtime_path: str) -> list[Mount]:
        """What a container in this image's root file system needs from the host, at the same paths:
        the interpreter, the environment, the runtime, the function's code and the control plane's socket."""
        out = [Mount(self.interpreter_prefix or "", self.interpreter_prefix or "", read_only=True),
               Mount(os.path.dirname(self.venv), os.path.dirname(self.venv), read_only=True)]
        out += [Mount(p, p, read_only=True) for p in runtime_dirs(runtime_path)]
        out += [Mount(p, p, read_only=True) for p in self.python_path]
        out += [Mount(p, p, read_only=True) for p in _code_dirs(code_dirs)]
        out.append(Mount(socket, socket, read_only=False))
        return out


def runtime_dirs(runtime_path: str) -> list[str]:
    """The runtime's directories and the real directories (or module files) their links point to."""
    out = []
    for path in runtime_path.split(os.pathsep):
        out.append(path)
        for entry in sorted(os.listdir(path)):
            out.append(os.path.realpath(os.path.join(path, entry)))
    return out


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


def _code_dirs(dirs: list[str]) -> list[str]:
    return _outermost(d for d in dirs if d and os.path.isdir(d))


def _outermost(dirs: Any) -> list[str]:
    """Directories not inside another one of them (binding the outer one is enough)."""
    out: list[str] = []
    for d in sorted({os.path.realpath(d) for d in dirs}):
        if not any(_under(d, o) for o in out):
            out.append(d)
    return out


def _short(key: str) -> str:
    return key[:12]


def _rmtree(path: str | Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


class _FileDigests:
    """sha256 of local files, remembered by (path, size, mtime, inode) so an unchanged file costs a stat."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[tuple[int, int, int], str]] = {}

    def stat_key(self, path: str) -> tuple[int, int, int]:
        st = os.stat(path)
        return (st.st_size, st.st_mtime_ns, st.st_ino)

    def digest(self, path: str) -> str:
        key = self.stat_key(path)
        hit = self._cache.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        value = h.hexdigest()
        self._cache[path] = (key, value)
        return value


def node_steps(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Layer steps as another node's builder gets them (`ImageBuilder.build_steps`): what they are
    hashed by, and the local paths they read, but no secret's value (a step that had secrets says so).
    A step that runs in a sandbox of the control plane's backend (a root file system's, `run_function`)
    keeps only its kind: no other node builds it."""
    out: list[dict[str, Any]] = []
    for step in steps:
        portable = {k: v for k, v in step.items() if k not in ("_secret_env", "force_build")}
        if step.get("_secret_env"):
            portable["_had_secrets"] = True
        try:
            json.dumps(portable)
        except (TypeError, ValueError):
            portable = {}
        if not portable or step["kind"] in NODE_UNBUILDABLE:
            portable = {"kind": step["kind"], "_not_portable": True}
        out.append(portable)
    return out


class ImageBuilder:
    def __init__(self, root: str | Path, uv_bin: str | None = None, run_container: RunContainer | None = None,
                 debian: DebianBase | None = None) -> None:
        self.root = Path(root)
        self._run_container = run_container
        self.debian = debian or DebianBase()
        self.rootfs_scratch = self.root / "rootfs-mnt"  # an empty directory containers mount their root on
        self.rootfs_scratch.mkdir(parents=True, exist_ok=True)
        self.layers = self.root / "layers"
        self.images_dir = self.root / "images"
        self.mounts_dir = self.root / "mounts"
        for d in (self.layers, self.images_dir, self.mounts_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._uv = uv_bin
        self.interpreters = Interpreters()
        self.digests = _FileDigests()
        self._images: dict[str, BuiltImage] = {}
        self._inflight: dict[str, asyncio.Future] = {}
        self._layer_builds: dict[str, asyncio.Future] = {}
        self._runtime_path: str | None = None
        self._web_runtime_path: str | None = None
        self._default_id: str | None = None

    # --- tools -------------------------------------------------------------------------------------
    @property
    def uv(self) -> str:
        if self._uv is None:
            try:
                from uv import find_uv_bin

                self._uv = find_uv_bin()
            except (ImportError, FileNotFoundError):
                found = shutil.which("uv")
                if found is None:
                    raise ImageUnsupported(
                        "Building images needs uv: install the `uv` package into the control plane's "
                        "environment (`pip install uv`)."
                    ) from None
                self._uv = found
        return self._uv

    def runtime_path(self, web: bool = False) -> str:
        """Directories holding only the runtime's packages (links to the control plane's own), joined
        with `os.pathsep`; `web`: also what web endpoints are served with (uvicorn, FastAPI, a2wsgi and
        what they need), which only web containers see."""
        if self._runtime_path is None:
            self._runtime_path = self._link_dir("runtime", _module_sources(RUNTIME_PACKAGES))
        if not web:
            return self._runtime_path
        if self._web_runtime_path is None:
            sources = _distribution_sources(WEB_DISTRIBUTIONS)
            for name in os.listdir(self._runtime_path):
                sources.pop(name, None)
            self._web_runtime_path = self._link_dir("runtime-web", sources)
        return self._runtime_path + os.pathsep + self._web_runtime_path

    @staticmethod
    def runtime_sources(runtime_path: str) -> tuple[str, ...]:
        """Where the packages of a runtime path (`runtime_path()`) really are: its entries link to the
        control plane's own, which an isolated container must keep in view (read-only) wherever they
        live (a virtual environment under /tmp, say)."""
        out = []
        for d in runtime_path.split(os.pathsep):
            with contextlib.suppress(OSError):
                for name in os.listdir(d):
                    out.append(os.path.realpath(os.path.join(d, name)))
        return tuple(dict.fromkeys(out))

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
                _rmtree(tmp)
        return str(target)

    # --- looking images up -------------------------------------------------------------------------
    def get(self, image_id: str) -> BuiltImage:
        image = self._images.get(image_id)
        if image is not None:
            return image
        try:
            record = json.loads((self.images_dir / f"{image_id}.json").read_text())
        except (OSError, ValueError):
            raise ImageNotFound(
                f"image {image_id} is not on this machine (its build was removed); run or deploy the app "
                "again to rebuild it"
            ) from None
        image = self._load(record)
        self._images[image_id] = image
        return image

    def _layer_meta(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.layers / key / "layer.json").read_text())
        except (OSError, ValueError):
            return None

    def _load(self, record: dict[str, Any]) -> BuiltImage:
        meta = self._layer_meta(record["layer"])
        if meta is None:
            raise ImageNotFound(f"image {record['image_id']} lost its layer {record['layer'][:12]}; build it again")
        mounts = [(str(self.layers / meta["files_from"] / "fs" / t.lstrip("/")), t) for t in meta.get("fs_targets", ())]
        mounts += [(m[0], m[1]) for m in record.get("mounts", ())]
        workdir = meta.get("workdir")
        rootfs = meta.get("rootfs")
        if workdir and not rootfs and not os.path.isdir(workdir) and not any(_under(workdir, t) for _, t in mounts):
            # Like a Dockerfile's WORKDIR, the directory exists in the image even when nothing is in it.
            empty = self.root / "workdirs" / record["image_id"] / workdir.lstrip("/")
            empty.mkdir(parents=True, exist_ok=True)
            mounts.append((str(empty), workdir))
        lower = None
        if rootfs:
            lower = [str(self.layers / k / "rootfs") for k in reversed(rootfs["uppers"])] + [rootfs["base"]]
        return BuiltImage(
            rootfs_lower=lower,
            interpreter_prefix=rootfs.get("interpreter_prefix") if rootfs else None,
            rootfs_scratch=str(self.rootfs_scratch),
            image_id=record["image_id"],
            layer=record["layer"],
            venv=str(self.layers / meta["files_from"] / "venv"),
            python_version=meta["python"]["version"],
            env=dict(meta.get("env") or {}),
            workdir=workdir,
            python_path=[str(self.layers / meta["files_from"] / "fs" / r.lstrip("/")) for r in meta.get("python_roots", ())]
            + list(record.get("python_path", ())),
            mounts=mounts,
            steps=record.get("node_steps"),
        )

    async def default_image(self) -> BuiltImage:
        """The image of functions that name none: Python of this control plane, runtime only."""
        if self._default_id is None:
            v = sys.version_info
            self._default_id = await self.build({"steps": [{"kind": "debian_slim", "python_version": f"{v.major}.{v.minor}"}]})
        return self.get(self._default_id)

    # --- building ----------------------------------------------------------------------------------
    async def plan(self, request: dict[str, Any]) -> Plan:
        """What building `request` means on this machine, found without building anything: fails now
        on what it asks that this machine cannot give (no matching interpreter, a requirements file
        that cannot be read, a base image Homeport cannot make)."""
        steps = [dict(s) for s in request["steps"]]
        for s in steps:  # what `Image.imports()` compares with during `run_function` steps
            s["_image_hash"] = request.get("image_hash") or ""
        if not steps or steps[0]["kind"] not in ("debian_slim", "from_registry"):
            raise ImageBuildFailed("an image starts with Image.debian_slim() (or Image.from_registry())")
        if steps[0]["kind"] == "from_registry":
            raise ImageUnsupported(
                f"Image.from_registry({steps[0].get('tag')!r}) is not supported by Homeport yet: it needs "
                "a container image puller. Use Image.debian_slim() with the packages the function needs."
            )
        layer_steps, mount_steps = L.split_mounts(steps)
        await asyncio.to_thread(self._enrich, layer_steps)
        return Plan(steps, layer_steps, mount_steps, L.layer_keys(layer_steps))

    async def build(self, request: dict[str, Any] | Plan, log_fn: LogFn | None = None) -> str:
        """Build what is not cached of the image (a request, or its `plan`); return its id.
        Concurrent builds of one image share."""
        out = log_fn or (lambda line, fd: None)
        t0 = time.perf_counter()
        plan = request if isinstance(request, Plan) else await self.plan(request)
        steps, layer_steps, mount_steps, keys = plan.steps, plan.layer_steps, plan.mount_steps, plan.keys
        mounts_key, staged = await asyncio.to_thread(self._stage_mounts, mount_steps)
        image_id = L.image_id(keys[-1], mounts_key)
        if not any(s.get("force_build") for s in layer_steps):
            with contextlib.suppress(ImageNotFound):
                self.get(image_id)
                log.debug("image %s cached (%.2f ms)", image_id, 1000 * (time.perf_counter() - t0))
                return image_id
        fut = self._inflight.get(image_id)
        if fut is not None:
            await asyncio.shield(fut)
            return image_id
        fut = asyncio.get_running_loop().create_future()
        self._inflight[image_id] = fut
        try:
            await self._build_layers(image_id, layer_steps, keys, out, t0)
            record = {"image_id": image_id, "layer": keys[-1], "created_at": time.time(),
                      "steps": [L.describe(s) for s in steps], "node_steps": node_steps(layer_steps), **staged}
            self._write_json(self.images_dir / f"{image_id}.json", record)
            self._images[image_id] = self._load(record)
            fut.set_result(None)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: a build nobody else waits for must not warn
            raise
        finally:
            self._inflight.pop(image_id, None)
        return image_id

    async def build_steps(self, steps: list[dict[str, Any]], log_fn: LogFn | None = None) -> str:
        """Build an image from layer steps another builder planned (`node_steps`), named by the same
        content hashes; return its id (that of the image without files added at container start)."""
        steps = [dict(s) for s in steps]
        keys = L.layer_keys(steps)
        await asyncio.to_thread(self._local_interpreters, steps)
        return await self.build(Plan(steps, steps, [], keys), log_fn)

    def _local_interpreters(self, steps: list[dict[str, Any]]) -> None:
        """The same Python, wherever this machine has it (the layer keeps its name)."""
        for step in steps:
            interp = step.get("interpreter")
            if step["kind"] == "debian_slim" and interp and not os.path.exists(interp["path"]):
                try:
                    found = self.interpreters.find(interp["version"])
                except NoInterpreter as exc:
                    raise ImageBuildFailed(f"{L.describe(step)}: {exc}") from None
                step["interpreter"] = {"path": found.path, "version": found.version_str}

    async def _build_layers(self, image_id: str, steps: list[dict[str, Any]], keys: list[str], out: LogFn,
                            t0: float) -> None:
        forced = [bool(s.get("force_build")) for s in steps]
        start = L.first_to_build(keys, lambda k: (self.layers / k / "layer.json").exists(), forced)
        n = len(steps)
        if start == n:
            log.info("image %s cached (%.1f ms)", image_id, 1000 * (time.perf_counter() - t0))
            return
        out(f"Building image {image_id} ({n - start} of {n} steps to build"
            + (f", {start} cached" if start else "") + ")", 1)
        log.info("building image %s: steps %d..%d of %d", image_id, start + 1, n, n)
        for i in range(start, n):
            label = L.describe(steps[i])
            out(f"=> Step {i + 1}/{n}: {label}", 1)
            t = time.perf_counter()
            try:
                await self._layer_once(steps[i], keys, i, forced[i], out)
            except (ImageBuildFailed, ImageUnsupported) as exc:
                out(f"=> Step {i + 1}/{n} failed: {exc}", 2)
                raise type(exc)(f"Image build failed at step {i + 1} of {n}, {label}: {exc}") from None
            out(f"=> Step {i + 1}/{n} done in {time.perf_counter() - t:.2f}s", 1)
        out(f"Built image {image_id} in {time.perf_counter() - t0:.2f}s", 1)

    async def _layer_once(self, step: dict[str, Any], keys: list[str], i: int, forced: bool, out: LogFn) -> None:
        """Build layer `i`, or wait for a concurrent build of the same layer (another image sharing it)."""
        key = keys[i]
        running = self._layer_builds.get(key)
        if running is not None:
            out("(built by a concurrent build of another image; waiting for it)", 1)
            await asyncio.shield(running)
            if forced:  # it may have started before this build asked for a fresh one
                await self._layer_once(step, keys, i, False, out)
            return
        if not forced and (self.layers / key / "layer.json").exists():
            return  # a concurrent build made it after this one planned
        fut = asyncio.get_running_loop().create_future()
        self._layer_builds[key] = fut
        try:
            parent = self._layer_meta(keys[i - 1]) if i else None
            await self._build_layer(step, key, parent, out)
            fut.set_result(None)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()
            raise
        finally:
            self._layer_builds.pop(key, None)

    def _write_json(self, path: Path, data: dict[str, Any]) -> None:
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)

    # --- what a step means on this machine (hashed with it) ----------------------------------------
    def _enrich(self, steps: list[dict[str, Any]]) -> None:
        # An image with its own root file system carries its interpreter into it: not the system's.
        own_root = any(s["kind"] in ROOTFS_KINDS for s in steps)
        for step in steps:
            kind = step["kind"]
            if kind == "debian_slim":
                try:
                    interp = self.interpreters.find(step.get("python_version") or "3",
                                                    ROOTFS_INTERPRETERS if own_root else None)
                except NoInterpreter as exc:
                    raise ImageBuildFailed(f"Image build failed at step 1, {L.describe(step)}: {exc}") from None
                step["interpreter"] = {"path": interp.path, "version": interp.version_str}
            elif kind == "pip_install_from_requirements":
                step["content_sha256"] = self._digest_or_fail(step, step["requirements_txt"])
            elif kind == "pip_install_from_pyproject":
                step["content_sha256"] = self._digest_or_fail(step, step["pyproject_toml"])
            elif kind == "uv_pip_install" and step.get("requirements"):
                step["content_sha256"] = [self._digest_or_fail(step, r) for r in step["requirements"]]
            elif kind in ROOTFS_KINDS:
                step["rootfs_base"] = self.debian.name
            elif kind in FILE_KINDS:
                step["_files"] = step.pop("files", [])
                step["_local_path"] = step.pop("local_path", None)
                step["content"] = [[t, self._digest_or_fail(step, s)] for t, s in step["_files"]]

    def _digest_or_fail(self, step: dict[str, Any], path: str) -> str:
        try:
            return self.digests.digest(path)
        except OSError as exc:
            raise ImageBuildFailed(f"{L.describe(step)}: cannot read {path}: {exc.strerror}") from None

    def _stage_mounts(self, steps: list[dict[str, Any]]) -> tuple[str | None, dict[str, Any]]:
        """Copy the files added at container start into a directory named by their paths and stats."""
        if not steps:
            return None, {}
        listing = []
        for step in steps:
            for target, source in step.get("files", ()):
                try:
                    listing.append([target, source, *self.digests.stat_key(source)])
                except OSError as exc:
                    raise ImageBuildFailed(f"{L.describe(step)}: cannot read {source}: {exc.strerror}") from None
            listing.append(["dirs", *step.get("dirs", ()), step.get("python_root")])
        key = hashlib.sha256(json.dumps(listing).encode()).hexdigest()
        stage = self.mounts_dir / key
        fs = stage / "fs"
        if not stage.exists():
            tmp = self.mounts_dir / f".tmp-{key[:16]}-{uuid.uuid4().hex[:8]}"
            (tmp / "fs").mkdir(parents=True)
            for step in steps:
                self._place_files(tmp / "fs", step)
            try:
                os.rename(tmp, stage)
            except OSError:
                _rmtree(tmp)
        mounts: list[list[str]] = []
        python_path: list[str] = []
        for step in steps:
            if step["kind"] == "add_local_python_source":
                root = str(fs / step["python_root"].lstrip("/"))
                if root not in python_path:
                    python_path.append(root)
            else:
                target = step["remote_path"]
                mounts.append([str(fs / target.lstrip("/")), target])
        return key, {"mounts": mounts, "python_path": python_path}

    @staticmethod
    def _place_files(fs: Path, step: dict[str, Any]) -> None:
        for d in step.get("dirs", ()):
            (fs / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
        for target, source in step.get("_files", step.get("files", ())):
            dest = fs / target.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                dest.unlink()  # never write through a hard link into an earlier layer
            shutil.copy2(source, dest)

    # --- one layer ---------------------------------------------------------------------------------
    async def _build_layer(self, step: dict[str, Any], key: str, parent: dict[str, Any] | None, out: LogFn) -> None:
        kind = step["kind"]
        meta: dict[str, Any] = dict(parent or {})
        meta.update(key=key, parent=parent["key"] if parent else None, step=L.describe(step), kind=kind)
        tmp = self.layers / f".tmp-{_short(key)}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            if kind == "debian_slim":
                await self._base_layer(step, tmp, out)
                meta.update(files_from=key, python=step["interpreter"], env={}, workdir=None,
                            python_roots=[], fs_targets=[])
            elif kind == "env":
                meta["env"] = {**meta.get("env", {}), **step["vars"]}
            elif kind == "workdir":
                meta["workdir"] = step["path"]
            elif kind in INSTALL_KINDS:
                # A confined install may run code it did not choose (a package's build): it gets a copy of
                # the layer before it, never hard links into a layer other images share.
                await self._copy_files(parent, tmp, link=not step.get("_confined"))
                meta["files_from"] = key
                await self._install(step, tmp, meta, out)
            elif kind in FILE_KINDS:
                await self._copy_files(parent, tmp, link=True)
                meta["files_from"] = key
                await asyncio.to_thread(self._place_files, tmp / "fs", step)
                if kind == "add_local_python_source":
                    roots = meta.get("python_roots", [])
                    meta["python_roots"] = roots if step["python_root"] in roots else [*roots, step["python_root"]]
                else:
                    targets = meta.get("fs_targets", [])
                    meta["fs_targets"] = [*targets, step["remote_path"]]
            elif kind == "run_function":
                await self._copy_files(parent, tmp, link=False)
                meta["files_from"] = key
                if meta.get("rootfs"):
                    await self._rootfs_step(step, key, tmp, meta, out)
                else:
                    await self._run_function(step, tmp, meta, out)
            elif kind in ROOTFS_KINDS:
                await self._copy_files(parent, tmp, link=kind == "apt_install")
                meta["files_from"] = key
                await self._rootfs_step(step, key, tmp, meta, out)
            else:
                raise ImageUnsupported(f"the build step {kind} is not supported by Homeport")
            meta["built_at"] = time.time()
            self._write_json(tmp / "layer.json", meta)
            final = self.layers / key
            if final.exists():  # a concurrent build of a sibling image made it first
                await asyncio.to_thread(_rmtree, final)
            os.rename(tmp, final)
        except BaseException:
            await asyncio.to_thread(_rmtree, tmp)
            raise

    @staticmethod
    def _needs_rootfs(kind: str, why: str) -> str:
        what = "Debian packages" if kind == "apt_install" else "shell commands"
        return (
            f"Image.{kind}() cannot be built on this machine: installing {what} into an image needs a "
            f"Debian root file system for it (made once with `debootstrap`, run in a mount namespace), and "
            f"{why}. Remove the step and install what it provides on this machine instead, or use "
            "pip_install/uv_pip_install for Python packages."
        )

    async def _rootfs_step(self, step: dict[str, Any], key: str, tmp: Path, meta: dict[str, Any], out: LogFn) -> None:
        """apt_install, run_commands, or run_function of an image with a root file system: run in the
        image's root file system, whose writes become this layer (an overlay upper directory)."""
        kind = step["kind"]
        if self._run_container is None:
            raise ImageUnsupported(self._needs_rootfs(kind, "this control plane's backend cannot run build steps"))
        try:
            base = await self.debian.ensure(self._run, out)
            prefix = interpreter_prefix(meta["python"]["path"])
        except RootfsUnavailable as exc:
            raise ImageUnsupported(self._needs_rootfs(kind, str(exc))) from None
        rootfs = dict(meta.get("rootfs") or {"base": str(base), "uppers": [], "interpreter_prefix": prefix})
        upper, work, scratch = tmp / "rootfs", tmp / ".work", tmp / ".mnt"
        for d in (upper, work, scratch):
            d.mkdir()
        venv = str(tmp / "venv")
        env = {"PATH": os.path.join(venv, "bin") + os.pathsep + DEBIAN_PATH, "HOME": "/root", "LANG": "C.UTF-8",
               "DEBIAN_FRONTEND": "noninteractive", "VIRTUAL_ENV": venv, **(meta.get("env") or {}),
               **(step.get("env") or {}), **(step.get("_secret_env") or {})}
        mounts = [Mount(prefix, prefix, read_only=True), Mount(str(tmp), str(tmp), read_only=False)]
        files_from = self.layers / meta["files_from"] if meta["files_from"] != key else tmp
        mounts += [Mount(str(files_from / "fs" / t.lstrip("/")), t, read_only=True) for t in meta.get("fs_targets", ())]
        cwd = meta.get("workdir") or "/"
        if kind == "apt_install":
            pkgs = shlex.join(step["packages"])
            argv = ["/bin/sh", "-c", f"set -e; apt-get update -q; apt-get install -y -q --no-install-recommends {pkgs}; "
                    "apt-get clean; rm -rf /var/lib/apt/lists/*"]
            what = "apt-get install"
        elif kind == "run_commands":
            script = "set -e\n" + "".join(
                f"echo {shlex.quote('$ ' + c)}\n/bin/sh -c {shlex.quote(c)}\n" for c in step["commands"])
            argv, what = ["/bin/sh", "-c", script], "the commands"
        else:
            spec_path = self._write_function_spec(step, tmp)
            fn = step["function"]
            code = [*(fn.get("_sys_path") or []), fn.get("_cwd") or ""]
            runtime = self.runtime_path()
            mounts += [Mount(p, p, read_only=True) for p in runtime_dirs(runtime)]
            mounts += [Mount(p, p, read_only=True) for p in _code_dirs(code)]
            env.update(self._function_env(step, meta, venv, runtime))
            env["PATH"] = os.path.join(venv, "bin") + os.pathsep + DEBIAN_PATH
            argv = [os.path.join(venv, "bin", "python"), "-m", "homeport.runtime._build", str(spec_path)]
            what = f"the function {fn['qualname']}"
        lower = [str(self.layers / k / "rootfs") for k in reversed(rootfs["uppers"])] + [rootfs["base"]]
        spec = json.dumps({"lower": lower, "upper": str(upper), "work": str(work), "scratch": str(scratch), "cwd": cwd})
        tail: deque[str] = deque(maxlen=TAIL_LINES)

        def collect(line: str, fd: int) -> None:
            tail.append(line)
            out(line, fd)

        code_ = await self._run_container(argv, env, spec, mounts, collect, float(step.get("timeout") or INSTALL_TIMEOUT),
                                          None)
        if code_ is None:
            raise ImageBuildFailed(f"{what} did not finish within {step.get('timeout') or INSTALL_TIMEOUT:g}s{_tail(tail)}")
        if code_ != 0:
            raise ImageBuildFailed(f"{what} exited with code {code_}{_tail(tail)}")
        for d in (work, scratch):
            await asyncio.to_thread(_rmtree, d)
        with contextlib.suppress(FileNotFoundError):
            (tmp / ".run_function.msgpack").unlink()
        rootfs["uppers"] = [*rootfs["uppers"], key]
        meta["rootfs"] = rootfs

    async def _copy_files(self, parent: dict[str, Any] | None, dest: Path, link: bool) -> None:
        if parent is None:
            return
        src = self.layers / parent["files_from"]
        for part in ("venv", "fs"):
            if (src / part).exists():
                args = ["cp", "-a", "--link" if link else "--reflink=auto", str(src / part), str(dest / part)]
                await self._run(args, lambda line, fd: None, "copying the layer before it", timeout=INSTALL_TIMEOUT)

    def _tool_env(self, meta: dict[str, Any] | None = None, step: dict[str, Any] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOMEPORT_") and k not in _INTERPRETER_VARS}
        env["UV_PYTHON_DOWNLOADS"] = "never"
        env["UV_NO_PROGRESS"] = "1"
        if meta:
            env.update(meta.get("env") or {})
        if step:
            env.update(step.get("env") or {})
            env.update(step.get("_secret_env") or {})
        return env

    async def _base_layer(self, step: dict[str, Any], tmp: Path, out: LogFn) -> None:
        interp = step["interpreter"]
        out(f"Python {interp['version']} from {interp['path']}", 1)
        venv = tmp / "venv"
        await self._run([self.uv, "venv", "--quiet", "--relocatable", "--no-config", "--python", interp["path"], str(venv)],
                        out, "uv venv", env=self._tool_env())
        site = await self._site_packages(venv)
        (Path(site) / PTH_NAME).write_text(PTH_LINE)

    async def _site_packages(self, venv: Path) -> str:
        libs = sorted((venv / "lib").glob("python3.*/site-packages"))
        if not libs:
            raise ImageBuildFailed(f"the new environment has no site-packages under {venv}/lib")
        return str(libs[0])

    def _index_args(self, step: dict[str, Any]) -> list[str]:
        args: list[str] = []
        if step.get("index_url"):
            args += ["--index-url", step["index_url"]]
        if step.get("extra_index_url"):
            args += ["--extra-index-url", step["extra_index_url"]]
        if step.get("find_links"):
            args += ["--find-links", step["find_links"]]
        if step.get("pre"):
            args += ["--prerelease", "allow"]
        if step.get("extra_options"):
            args += shlex.split(step["extra_options"])
        return args

    async def _install(self, step: dict[str, Any], tmp: Path, meta: dict[str, Any], out: LogFn) -> None:
        kind = step["kind"]
        python = str(tmp / "venv" / "bin" / "python")
        args = [self.uv, "pip", "install", "--python", python, *self._index_args(step)]
        if kind == "uv_pip_install" and step.get("uv_version"):
            out(f"note: uv_version={step['uv_version']!r} asked for; building with the control plane's uv", 2)
        if kind in ("pip_install", "uv_pip_install"):
            args += list(step.get("packages") or ())
            for req in step.get("requirements") or ():
                args += ["-r", req]
        elif kind == "pip_install_from_requirements":
            args += ["-r", step["requirements_txt"]]
        elif kind == "pip_install_from_pyproject":
            args += ["-r", step["pyproject_toml"]]
            for extra in step.get("optional_dependencies") or ():
                args += ["--extra", extra]
        if step.get("_confined"):
            await self._install_confined(args, tmp, meta, step, out)
        else:
            await self._run(args, out, "uv pip install", env=self._tool_env(meta, step), timeout=INSTALL_TIMEOUT)

    async def _install_confined(self, args: list[str], tmp: Path, meta: dict[str, Any], step: dict[str, Any],
                                out: LogFn) -> None:
        """`uv pip install` for an image that code in a container asked for (a sandbox's image): in a build
        container of the backend, like run_function, not on this machine. A package's build, a `.pth` file
        of an earlier step or the image's `env` then act on the layer being built and nothing else: the
        host is read-only there and the state directory hidden. Its environment is the allowlisted base
        one, the index settings of this machine (`UV_*`, `PIP_*`: the same packages as any build), the
        image's and the step's; its download cache is its own, removed after."""
        if self._run_container is None:
            raise ImageUnsupported("a pip install asked for from inside a container runs in a build container, "
                                   "and this control plane's backend cannot run one")
        cache = tmp / ".uv-cache"
        env = base_environ(os.environ)
        env.update({k: v for k, v in os.environ.items() if k.startswith(("UV_", "PIP_"))})
        env.update({"UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1", "UV_CACHE_DIR": str(cache),
                    **(meta.get("env") or {}), **(step.get("env") or {}), **(step.get("_secret_env") or {})})
        interpreter = os.path.dirname(os.path.dirname(os.path.realpath(meta["python"]["path"])))  # noqa: ASYNC240
        uv = os.path.dirname(os.path.realpath(args[0]))  # noqa: ASYNC240 - two paths, no I/O worth a thread
        mounts = [Mount(str(tmp), str(tmp), read_only=False)]
        mounts += [Mount(p, p, read_only=True) for p in _outermost([interpreter, uv])]
        tail: deque[str] = deque(maxlen=TAIL_LINES)

        def collect(line: str, fd: int) -> None:
            tail.append(line)
            out(line, fd)

        try:
            code = await self._run_container(args, env, None, mounts, collect, INSTALL_TIMEOUT, None)
        finally:
            await asyncio.to_thread(_rmtree, cache)
        if code is None:
            raise ImageBuildFailed(f"uv pip install did not finish within {INSTALL_TIMEOUT:g}s{_tail(tail)}")
        if code != 0:
            raise ImageBuildFailed(f"uv pip install exited with code {code}{_tail(tail)}")

    def _write_function_spec(self, step: dict[str, Any], tmp: Path) -> Path:
        fn = step["function"]
        spec = {
            "module_name": fn["module_name"],
            "module_file": fn.get("_module_file"),
            "qualname": fn["qualname"],
            "serialized": fn.get("_serialized"),
            "sys_path": fn.get("_sys_path") or [],
            "args": step["args"],
        }
        spec_path = tmp / ".run_function.msgpack"
        spec_path.write_bytes(msgpack.packb(spec, use_bin_type=True))
        return spec_path

    def _function_env(self, step: dict[str, Any], meta: dict[str, Any], venv: str, runtime: str) -> dict[str, str]:
        tmp = os.path.dirname(venv)
        env = BuiltImage("build", "", venv, "", env=dict(meta.get("env") or {}),
                         python_path=[os.path.join(tmp, "fs", r.lstrip("/")) for r in meta.get("python_roots", ())]
                         ).environ(os.environ, runtime)
        env.update(step.get("env") or {})
        env.update(step.get("_secret_env") or {})
        env.update({P.ENV_IS_REMOTE: "1", P.ENV_MODAL_IS_REMOTE: "1", "PYTHONUNBUFFERED": "1",
                    P.ENV_IMAGE_HASH: step.get("_image_hash") or ""})
        return env

    async def _run_function(self, step: dict[str, Any], tmp: Path, meta: dict[str, Any], out: LogFn) -> None:
        """run_function in an image without a root file system: in a sandbox where the host is read-only,
        so what the function writes lands in the image (its environment, its files) or fails, never on
        the host, where it would be shared by every image and not be part of this one."""
        fn = step["function"]
        what = f"the function {fn['qualname']}"
        if self._run_container is None:
            raise ImageUnsupported(f"Image.run_function(): {what} runs in a sandbox of the control plane's "
                                   "backend, and this image builder has none")
        spec_path = self._write_function_spec(step, tmp)
        venv = str(tmp / "venv")
        runtime = self.runtime_path()
        env = self._function_env(step, meta, venv, runtime)
        cwd = _existing_dir(meta.get("workdir")) or _existing_dir(fn.get("_cwd"))
        mounts = _function_step_mounts(tmp, meta, fn, runtime)
        argv = [os.path.join(venv, "bin", "python"), "-m", "homeport.runtime._build", str(spec_path)]
        tail: deque[str] = deque(maxlen=TAIL_LINES)

        def collect(line: str, fd: int) -> None:
            tail.append(line)
            out(line, fd)

        timeout = float(step.get("timeout") or 3600)
        try:
            code = await self._run_container(argv, env, None, mounts, collect, timeout, cwd)
        finally:
            with contextlib.suppress(FileNotFoundError):
                spec_path.unlink()
        if code is None:
            raise ImageBuildFailed(f"{what} did not finish within {timeout:g}s{_tail(tail)}")
        if code != 0:
            raise ImageBuildFailed(f"{what} exited with code {code}{_read_only_hint(tail)}{_tail(tail)}")

    async def _run(self, argv: list[str], out: LogFn, what: str, env: dict[str, str] | None = None,
                   cwd: str | None = None, timeout: float = 600.0) -> None:
        """Run a build command, streaming its output; fail with its tail."""
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True,
            )
        except OSError as exc:
            raise ImageBuildFailed(f"{what} could not start: {exc}") from None
        tail: deque[str] = deque(maxlen=TAIL_LINES)

        async def pump() -> None:
            assert proc.stdout is not None
            while True:
                line = await proc.stdout.readline()
                if not line:
                    return
                text = line.decode("utf-8", "replace").rstrip("\n")
                tail.append(text)
                out(text, 1)

        try:
            await asyncio.wait_for(asyncio.gather(pump(), proc.wait()), timeout)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise ImageBuildFailed(f"{what} did not finish within {timeout:g}s{_tail(tail)}") from None
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise
        if proc.returncode != 0:
            raise ImageBuildFailed(f"{what} exited with code {proc.returncode}{_tail(tail)}")


def _function_step_mounts(tmp: Path, meta: dict[str, Any], fn: dict[str, Any], runtime: str) -> list[Mount]:
    """What a run_function step sees besides the read-only host: writable, the layer being built (the
    environment, the image's files at their paths); readable wherever the host's are hidden (its /tmp
    is private), the interpreter, the runtime and the function's code."""
    interpreter = os.path.dirname(os.path.dirname(os.path.realpath(meta["python"]["path"])))
    mounts = [Mount(str(tmp), str(tmp), read_only=False)]
    mounts += [Mount(str(tmp / "fs" / t.lstrip("/")), t, read_only=False) for t in meta.get("fs_targets", ())]
    mounts += [Mount(p, p, read_only=True) for p in _outermost([interpreter, *runtime_dirs(runtime)])]
    mounts += [Mount(p, p, read_only=True) for p in _code_dirs([*(fn.get("_sys_path") or []), fn.get("_cwd") or ""])]
    return mounts


def _read_only_hint(tail: deque[str]) -> str:
    """What to do when a build step failed writing outside the image (EROFS in its output)."""
    line = next((line for line in reversed(tail) if "Read-only file system" in line), None)
    if line is None:
        return ""
    return (
        f": it wrote outside the image ({line.strip()}). In an image without its own root file system a "
        "build step can write only to the image's Python environment (sys.prefix), to files the image added "
        "with copy=True, and to /tmp, which is not kept. To keep files anywhere in the image, give it a "
        "root file system: put an apt_install(...) or run_commands(...) step before run_function, and its "
        "writes persist in the image"
    )


def _existing_dir(path: str | None) -> str | None:
    return path if path and os.path.isdir(path) else None


def _under(path: str, target: str) -> bool:
    return path == target or path.startswith(target.rstrip("/") + "/")


def _tail(lines: deque[str]) -> str:
    if not lines:
        return " (no output)"
    return ". Last lines of its output:\n" + "\n".join("    " + line for line in lines)
