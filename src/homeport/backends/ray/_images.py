"""Images on every node: a container's node builds its image's environment in its own cache.

The control plane plans an image (`homeport.image_builder`) and names its layers by content hash; it hands the
planned steps to the container (`ContainerSpec.image`). On the node, `NodeImages.ensure` builds what its
cache (`HOMEPORT_NODE_IMAGES`, else ~/.cache/homeport/node-images) lacks with the same builder and the
same hashes, under a lock file per image so that the containers starting on one node at once build it
once, and `relocate` points the container's paths from the control plane's image directory at the node's.

What no node builds (it runs in a sandbox of the control plane's backend): apt_install, run_commands and
run_function steps, and steps with secrets (whose values stay on the control plane); those fail with an
UnimplementedError naming the step. Files added at container start (`copy=False`) are the control plane's:
they need the shared file system, as volumes do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import os
from collections.abc import Callable

from ..._protocol import ENV_RUNTIME_PATH
from ...image_builder import ImageBuilder
from .._base import ContainerSpec, ImageSource, Mount

ENV_NODE_IMAGES = "HOMEPORT_NODE_IMAGES"  # a node's own image cache directory (in its raylet's environment)
LogFn = Callable[[str, int], None]


class NodeImageUnbuildable(RuntimeError):
    """The image has a step no node but the control plane's builds (reported as an UnimplementedError)."""


def node_image_root() -> str:
    return os.environ.get(ENV_NODE_IMAGES) or os.path.join(os.path.expanduser("~"), ".cache", "homeport",
                                                            "node-images")


def unbuildable(source: ImageSource) -> str | None:
    """Why a node cannot build this image (None: it can)."""
    for step in source.steps:
        kind = step["kind"]
        if step.get("_not_portable"):
            return (f"UnimplementedError: Image.{kind}() is not built on the nodes of a Ray cluster yet (it runs "
                    f"in a sandbox of the control plane's machine); image {source.image_id} cannot run on Ray. "
                    "Use pip_install/uv_pip_install and install system packages on the nodes themselves.")
        if step.get("_had_secrets"):
            return (f"UnimplementedError: the build step {kind} of image {source.image_id} uses secrets, which "
                    "are not sent to the nodes of a Ray cluster to build images with yet")
    return None


def missing_files(source: ImageSource, exists: Callable[[str], bool] = os.path.exists) -> str | None:
    """Why this node cannot copy an image's local files (`copy=True`) into its layers (None: it can)."""
    for step in source.steps:
        for _target, path in step.get("_files") or ():
            if not exists(path):
                return (f"UnimplementedError: {step['kind']}(copy=True) of image {source.image_id} reads {path} on "
                        "the control plane's machine, which this Ray node does not see; sending local files to "
                        "the nodes is not built yet (put them on storage every node sees at the same path)")
    return None


def relocate(spec: ContainerSpec, node_root: str, runtime_path: str, runtime_sources: tuple[str, ...]) -> ContainerSpec:
    """The spec with the image's paths (the control plane's `layers/`, its runtime links and empty working
    directories) moved to the node's cache; files staged at container start (`mounts/`) stay where they are."""
    assert spec.image is not None
    src_root = spec.image.root.rstrip("/")
    moved = tuple(f"{src_root}/{part}/" for part in ("layers", "workdirs"))

    def move(value: str) -> str:
        for prefix in moved:
            value = value.replace(prefix, node_root.rstrip("/") + prefix[len(src_root):])
        return value

    env = {k: move(v) for k, v in spec.env.items()}
    if env.get(ENV_RUNTIME_PATH):
        env[ENV_RUNTIME_PATH] = runtime_path
    mounts = tuple(dataclasses.replace(m, source=move(m.source)) for m in spec.mounts)
    return dataclasses.replace(spec, argv=tuple(move(a) for a in spec.argv), env=env, mounts=mounts,
                               cwd=move(spec.cwd) if spec.cwd else spec.cwd,
                               code=(*(move(c) for c in spec.code), *runtime_sources))


def _workdirs(mounts: tuple[Mount, ...], node_root: str) -> None:
    """An image's working directory exists even when nothing is in it: made empty in the node's cache."""
    for m in mounts:
        if m.source.startswith(os.path.join(node_root, "workdirs") + "/"):
            os.makedirs(m.source, exist_ok=True)


def _locked(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


class NodeImages:
    """This node's image cache: builds with the control plane's image builder, rooted here."""

    def __init__(self, root: str | None = None) -> None:
        self.root = root or node_image_root()
        self._builder: ImageBuilder | None = None

    @property
    def builder(self) -> ImageBuilder:
        if self._builder is None:
            self._builder = ImageBuilder(self.root)  # no backend to run sandboxed steps with: refused above
        return self._builder

    async def ensure(self, spec: ContainerSpec, out: LogFn) -> ContainerSpec:
        """The spec with its image built in this node's cache (at once when it is there already)."""
        source = spec.image
        if source is None:
            return spec
        why = unbuildable(source) or await asyncio.to_thread(missing_files, source)
        if why is not None:
            raise NodeImageUnbuildable(why)
        builder = self.builder
        # One build per node: the other containers of the image wait for the lock, then find it cached.
        lock = await asyncio.to_thread(_locked, os.path.join(self.root, f".build-{source.image_id}.lock"))
        try:
            await builder.build_steps(list(source.steps), out)
        finally:
            os.close(lock)  # releases the lock
        web = os.pathsep in (spec.env.get(ENV_RUNTIME_PATH) or "")
        runtime = builder.runtime_path(web=web)
        relocated = relocate(spec, self.root, runtime, builder.runtime_sources(runtime))
        _workdirs(relocated.mounts, self.root)
        # Read-only inside (as the control plane's image directory is): a container must not change the
        # packages of the other containers of its node.
        return dataclasses.replace(relocated, mounts=(Mount(self.root, self.root, read_only=True), *relocated.mounts))
