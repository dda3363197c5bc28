"""`ImageBuilder`: builds what is not cached of an image, layer by layer, and looks built images up.

Concurrent builds of one image share one build; images that share a layer build it once. A layer is
written under a temporary name and renamed into place when complete, its `layer.json` last.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from . import layers as L
from . import plan as _plan
from .built import BuiltImage, under
from .commands import INSTALL_TIMEOUT, LogFn, RunContainer, run_command
from .errors import ImageBuildFailed, ImageNotFound, ImageUnsupported
from .install import UvInstaller
from .interpreters import Interpreters
from .plan import FILE_KINDS, INSTALL_KINDS, ROOTFS_KINDS, FileDigests, Plan, node_steps
from .rootfs import DebianBase
from .runtime import RuntimeLinks, runtime_sources
from .sandboxed import SandboxedSteps

# Its logs are the control plane's (a node's builder logs under the same name in its worker).
log = logging.getLogger("homeport.server.images")


class ImageBuilder:
    """The images under `root` (see the package's docstring for the layout). `run_container` runs the
    steps that need a build container (a backend's); without one those steps fail as unsupported."""

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
        self.installer = UvInstaller(uv_bin)
        self.interpreters = Interpreters()
        self.digests = FileDigests()
        self.runtime = RuntimeLinks(self.root)
        self._images: dict[str, BuiltImage] = {}
        self._runtime_sources: dict[str, tuple[str, ...]] = {}
        self._inflight: dict[str, asyncio.Future] = {}
        self._layer_builds: dict[str, asyncio.Future] = {}
        self._default_id: str | None = None

    # --- tools -------------------------------------------------------------------------------------
    @property
    def uv(self) -> str:
        return self.installer.uv

    def runtime_path(self, web: bool = False) -> str:
        """Directories holding only the runtime's packages, joined with `os.pathsep` (`RuntimeLinks.path`)."""
        return self.runtime.path(web)

    def runtime_sources(self, runtime_path: str) -> tuple[str, ...]:
        """Where the packages of a runtime path really are (`runtime.runtime_sources`). Worked out once
        per path: its directories are named by what they link to (`RuntimeLinks`), and every container
        start asked again (a listing and a realpath per package, ~0.5 ms, before its fork request). A path
        this builder did not make (a function's own `HOMEPORT_RUNTIME_PATH`) is looked at each time."""
        found = self._runtime_sources.get(runtime_path)
        if found is None:
            found = runtime_sources(runtime_path)
            if runtime_path in self.runtime.made:
                self._runtime_sources[runtime_path] = found
        return found

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
        if workdir and not rootfs and not os.path.isdir(workdir) and not any(under(workdir, t) for _, t in mounts):
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
        steps = _plan.request_steps(request)
        layer_steps, mount_steps = L.split_mounts(steps)
        if _plan.enrich_is_quick(layer_steps, self.interpreters):
            _plan.enrich(layer_steps, self.interpreters, self.digests, self.debian.name)
        else:
            await asyncio.to_thread(_plan.enrich, layer_steps, self.interpreters, self.digests, self.debian.name)
        return Plan(steps, layer_steps, mount_steps, L.layer_keys(layer_steps))

    async def build(self, request: dict[str, Any] | Plan, log_fn: LogFn | None = None) -> str:
        """Build what is not cached of the image (a request, or its `plan`); return its id.
        Concurrent builds of one image share."""
        out = log_fn or (lambda line, fd: None)
        t0 = time.perf_counter()
        plan = request if isinstance(request, Plan) else await self.plan(request)
        steps, layer_steps, mount_steps, keys = plan.steps, plan.layer_steps, plan.mount_steps, plan.keys
        mounts_key, staged = (await asyncio.to_thread(_plan.stage_mounts, self.mounts_dir, self.digests, mount_steps)
                              if mount_steps else (None, {}))
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
            _write_json(self.images_dir / f"{image_id}.json", record)
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
        await asyncio.to_thread(_plan.local_interpreters, steps, self.interpreters)
        return await self.build(Plan(steps, steps, [], keys), log_fn)

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

    # --- one layer ---------------------------------------------------------------------------------
    async def _build_layer(self, step: dict[str, Any], key: str, parent: dict[str, Any] | None, out: LogFn) -> None:
        kind = step["kind"]
        meta: dict[str, Any] = dict(parent or {})
        meta.update(key=key, parent=parent["key"] if parent else None, step=L.describe(step), kind=kind)
        tmp = self.layers / f".tmp-{key[:12]}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        sandboxed = SandboxedSteps(self.layers, self.debian, self._run_container, self.runtime_path)
        try:
            if kind == "debian_slim":
                await self.installer.base_layer(step, tmp, out)
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
                await self.installer.install(step, tmp, meta, out, self._run_container)
            elif kind in FILE_KINDS:
                await self._copy_files(parent, tmp, link=True)
                meta["files_from"] = key
                await asyncio.to_thread(_plan.place_files, tmp / "fs", step)
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
                    await sandboxed.rootfs_step(step, key, tmp, meta, out)
                else:
                    await sandboxed.run_function(step, tmp, meta, out)
            elif kind in ROOTFS_KINDS:
                await self._copy_files(parent, tmp, link=kind == "apt_install")
                meta["files_from"] = key
                await sandboxed.rootfs_step(step, key, tmp, meta, out)
            else:
                raise ImageUnsupported(f"the build step {kind} is not supported by Homeport")
            meta["built_at"] = time.time()
            _write_json(tmp / "layer.json", meta)
            final = self.layers / key
            if final.exists():  # a concurrent build of a sibling image made it first
                await asyncio.to_thread(shutil.rmtree, final, True)
            os.rename(tmp, final)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, tmp, True)
            raise

    async def _copy_files(self, parent: dict[str, Any] | None, dest: Path, link: bool) -> None:
        if parent is None:
            return
        src = self.layers / parent["files_from"]
        for part in ("venv", "fs"):
            if (src / part).exists():
                args = ["cp", "-a", "--link" if link else "--reflink=auto", str(src / part), str(dest / part)]
                await run_command(args, lambda line, fd: None, "copying the layer before it", timeout=INSTALL_TIMEOUT)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)
