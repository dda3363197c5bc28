"""How a function's containers are made: their image, environment, file system view and template.

The control plane decides *that* a container starts (the scheduler) and keeps its record; this module
decides *what* starts: the `ContainerSpec` handed to the backend and the template it is forked from
(image build steps run as backend containers too: `images.BuildContainers`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import time
from collections.abc import Callable
from typing import Any

from .. import _protocol as P
from .._protocol.definition import FunctionDefinition
from ..backends import Backend, ContainerSpec, ImageSource, Mount, Placement
from .core.gpus import parse_request as parse_gpu_request
from .images import BuiltImage, ImageBuilder
from .records import FunctionRecord
from .templates import container_template

log = logging.getLogger("homeport.server")


class Launcher:
    gpus: tuple = ()  # the machine's GPUs (`core.gpus.GpuDevice`), set by the control plane

    def __init__(self, images: ImageBuilder, backend: Backend, address: str, web_dir: str,
                 spawn: Callable[[Any], asyncio.Task]) -> None:
        self.images = images
        self.backend = backend
        self.address = address  # what containers connect to: the Unix socket, or tcp://HOST:PORT
        self.socket_path = address  # the Unix socket (containers in a network namespace of their own)
        self.web_dir = web_dir
        self.spawn = spawn
        # Fork containers from template processes (HOMEPORT_TEMPLATES=0 starts fresh interpreters).
        self.use_templates = os.environ.get(P.ENV_TEMPLATES, "1") != "0"
        self.template_salt = secrets.token_bytes(32)  # template keys are keyed hashes (see .templates)

    async def function_image(self, definition: FunctionDefinition) -> BuiltImage:
        """The built image a function's containers run in (the default image when it names none)."""
        image_id = definition.image_id
        if image_id is None:
            return await self.images.default_image()
        return self.images.get(image_id)

    def image_environ(self, image: BuiltImage) -> dict[str, str]:
        return image.environ(os.environ, self.images.runtime_path())

    def prepare_default_template(self) -> None:
        """Build the default image and start its runtime template now, so that the first container
        is already a fork of it."""

        async def prepare() -> None:
            try:
                image = await self.images.default_image()
            except Exception:
                log.exception("the default image could not be built")
                return
            await self.prepare_template(image)

        self.spawn(prepare())

    async def prepare_template(self, image: BuiltImage) -> None:
        if self.use_templates:
            base_env = self.image_environ(image)
            await self.backend.prepare(container_template({}, image.argv(), base_env, base_env, salt=self.template_salt))

    async def build_images(self, requests: list[dict[str, Any]], on_log: Callable[[str, str, int], None]) -> list[str]:
        """Build (or find cached) each requested image; logs go to `on_log(image, line, fd)`.
        Every request is planned before any is built, so that what one of them asks and this machine
        cannot give (a python_version it has no interpreter for ...) fails before the others are built.
        Each image's runtime template starts right away, ready for the image's first container."""
        plans = [await self.images.plan(request) for request in requests]
        ids = []
        for i, plan in enumerate(plans):
            label = f"{i + 1}/{len(requests)}" if len(requests) > 1 else ""
            image_id = await self.images.build(plan, functools.partial(on_log, label))
            self.spawn(self.prepare_template(self.images.get(image_id)))
            ids.append(image_id)
        return ids

    async def spec(self, fn: FunctionRecord, cid: str, token: str, gpus: tuple[str, ...] = ()) -> ContainerSpec:
        image = await self.function_image(fn.defn)
        base_env = self.image_environ(image)
        env = P.user_environment({**base_env, **fn.env})  # the platform's own names are set below, only here
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                P.ENV_SERVER_ADDRESS: self.address,
                P.ENV_CONTAINER_ID: cid,
                P.ENV_CONTAINER_TOKEN: token,
                P.ENV_IS_REMOTE: "1",
                P.ENV_MODAL_IS_REMOTE: "1",
                P.ENV_MODAL_IMAGE_ID: image.image_id,
                P.ENV_IMAGE_HASH: fn.defn.image_hash or "",
                P.ENV_STARTED_AT: repr(time.time()),
                # Every container keeps the entries of this path in view (`runtime_sources`): a user's
                # environment that named the state directory here had its token in view.
                P.ENV_RUNTIME_PATH: self.images.runtime_path(),
            }
        )
        web = fn.defn.web or []
        # Each replica of a user's own web server needs a network of its own: those are not forked
        # from a template (whose copies would share the template's network). The backend says whether
        # it gave it one (`ENV_PRIVATE_NETWORK`).
        private_network = bool(web) and any(e["type"] in P.WEB_PROXIED for e in web)
        if private_network:  # TCP to this machine is out of reach from its own network: the socket is not
            env[P.ENV_SERVER_ADDRESS] = self.socket_path
        if web:
            # In a directory of its own, the only one of the shared socket directory it may write
            # (the local backend's containers see the rest read-only): `<dir>/<cid>/w-<index>`.
            os.makedirs(os.path.join(self.web_dir, cid), mode=0o700, exist_ok=True)
            env[P.ENV_WEB_SOCKET] = os.path.join(self.web_dir, cid, "w")
            env[P.ENV_RUNTIME_PATH] = self.images.runtime_path(web=True)
        argv = image.argv()
        cwd, mounts, rootfs = self.view(fn, image, env[P.ENV_RUNTIME_PATH])
        # A backend that places GPUs itself (Ray) tells the container which it got; this machine's are not its.
        devices, template_gpus = ((), ()) if self.backend.places_gpus else self._gpu_view(fn, gpus, env)
        template = None
        # A GPU container starts afresh, its devices in its own view, unless it is forked from a memory
        # snapshot: that one's view holds the nodes of the GPUs its containers may get, none visible to CUDA.
        if self.use_templates and not private_network and (not gpus or fn.defn.snapshot):
            template = container_template(fn.definition, argv, env, base_env, salt=self.template_salt, cwd=cwd,
                                          mounts=mounts, rootfs=rootfs, gpus=template_gpus)
        return ContainerSpec(
            container_id=cid,
            app_id=fn.app_id,
            function_tag=fn.tag,
            argv=argv,
            env=env,
            cwd=cwd,
            memory_limit_mib=fn.defn.memory_limit_mib,
            cpu_limit=fn.defn.cpu_limit,
            mounts=tuple(mounts),
            rootfs=rootfs,
            template=template,
            private_network=private_network,
            gpus=devices,
            placement=Placement(cpu=fn.config.cpu, memory_mib=fn.config.memory_mib,
                                # On a backend that places GPUs itself (Ray) the pool reserves none.
                                gpu=tuple(fn.config.gpu) or parse_gpu_request(fn.defn.gpu),
                                regions=tuple(fn.defn.region or ())),
            code=(*_code_paths(fn.defn), *self.images.runtime_sources(env[P.ENV_RUNTIME_PATH]))
            if rootfs is None else (),
            # Nodes of a cluster build the image themselves (in their own caches, by the same hashes).
            image=ImageSource(image.image_id, str(self.images.root), tuple(image.steps))
            if self.backend.spans_machines and image.steps is not None else None,
        )

    def _gpu_view(self, fn: FunctionRecord, gpus: tuple[str, ...], env: dict[str, str]) -> tuple[tuple[int, ...],
                                                                                               tuple[int, ...]]:
        """On a machine with GPUs, a container sees its own (by UUID) and no other: sets its
        `CUDA_VISIBLE_DEVICES` / `NVIDIA_VISIBLE_DEVICES`; returns its device numbers, and those of
        every GPU its function's request could get (a snapshot template's view holds their nodes)."""
        if not self.gpus:
            return (), ()
        from .core.gpus import matching

        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        env["NVIDIA_VISIBLE_DEVICES"] = ",".join(gpus) or "void"
        by_uuid = {d.uuid: d for d in self.gpus}
        mine = tuple(by_uuid[u].index for u in gpus if u in by_uuid)
        could = tuple(sorted({d.index for kind, _ in fn.config.gpu for d in matching(kind, self.gpus)}))
        return mine, could if fn.defn.snapshot else ()

    def view(self, fn: FunctionRecord, image: BuiltImage,
                        runtime_path: str | None = None) -> tuple[str | None, list[Mount], str | None]:
        """The working directory, mounts and root file system of the function's containers."""
        definition = fn.defn
        cwd = image.cwd(definition.cwd or None)
        # The image's files first, then the function's volumes (which win on a shared path).
        mounts = image.container_mounts()
        mounts += [Mount(host, target) for host, target in definition.mounts]
        rootfs = image.rootfs(cwd)
        if rootfs is not None:  # the image has its own root file system: cwd is inside it
            code = [*definition.sys_path, definition.cwd]
            if definition.module_file:
                code.append(os.path.dirname(definition.module_file))
            mounts += image.rootfs_mounts(code, self.socket_path, runtime_path or self.images.runtime_path())
            if definition.web:
                mounts.append(Mount(self.web_dir, self.web_dir))
            cwd = None
        return cwd, mounts, rootfs

    async def prepare_function_template(self, fn: FunctionRecord) -> None:
        """Start the runtime template of a function whose containers see their own file system
        (volumes, local files, a root file system), so that its first container is already a fork."""
        if not self.use_templates or fn.defn.snapshot:
            return  # a snapshot runs the user's code: it is taken when a container first needs it
        if any(e["type"] in P.WEB_PROXIED for e in fn.defn.web or ()):
            return  # started afresh, each in a network of its own
        try:
            image = await self.function_image(fn.defn)
            _cwd, mounts, rootfs = self.view(
                fn, image, self.images.runtime_path(web=True) if fn.defn.web else None)
        except Exception as exc:  # the container's own start reports it
            log.info("no template prepared for %s: %s", fn.tag, exc)
            return
        if mounts or rootfs:
            base_env = self.image_environ(image)
            await self.backend.prepare(container_template({}, image.argv(), base_env, base_env,
                                                          salt=self.template_salt, mounts=mounts, rootfs=rootfs))


def _code_paths(definition: FunctionDefinition) -> tuple[str, ...]:
    """Where the function's own code is read from: what an isolated container must keep in view."""
    code = [*definition.sys_path, definition.cwd]
    if definition.module_file:
        code.append(os.path.dirname(definition.module_file))
    return tuple(dict.fromkeys(p for p in code if p))
