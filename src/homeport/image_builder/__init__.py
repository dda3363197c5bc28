"""The image builder: turns an image's build steps into a Python environment, once, and caches it.

Below both the control plane (`homeport.server.images` runs build steps as containers of its backend)
and the backends (the Ray backend builds images on each node with it): it imports neither.

Layout under a builder's root (the control plane's `images/`, a Ray node's own cache):

    layers/<key>/layer.json   the manifest of one layer, written last (a layer without it does not exist)
    layers/<key>/venv/        the image's virtual environment (uv, relocatable), when this layer changed it
    layers/<key>/fs/          files the image adds at absolute paths (`copy=True`), under their path
    mounts/<key>/fs/          local files added at container start (`copy=False`), staged by stat
    images/<id>.json          an image: its last layer and its staged local files
    runtime/<key>/            the runtime's own packages (homeport, cloudpickle, msgpack) as links

A layer is named by `layers` from its step and the layer before it. Each `layer.json` carries
everything the image is at that point (interpreter, environment variables, working directory, which
layer holds its files), so resolving an image reads one file. Layers that only change metadata
(`env`, `workdir`) share the files of the layer before them; the others start from a copy of it:
hard links for steps whose writes Homeport controls (uv replaces files, never edits them in place), a
full copy before a step that runs user code.

The modules, by responsibility:

    layers        content addresses of layers (pure)
    plan          what a request means on this machine: interpreters, file digests, staged files
    interpreters  the Python interpreters here;  rootfs: the Debian base of images with their own root
    install       the uv layer: the environment and the packages installed into it
    sandboxed     steps run in a build container (apt_install, run_commands, run_function)
    commands      running a build's commands and reporting their output
    runtime       the runtime's own packages, linked into every image
    built         a built image as its containers use it
    builder       `ImageBuilder`: building layer by layer, caching, looking images up
"""

from __future__ import annotations

from .builder import ImageBuilder
from .built import BASE_ENV_VARS, BuiltImage, base_environ, runtime_dirs
from .commands import LogFn, RunContainer
from .errors import ImageBuildFailed, ImageNotFound, ImageUnsupported
from .plan import NODE_UNBUILDABLE, Plan, node_steps

__all__ = [
    "BASE_ENV_VARS",
    "NODE_UNBUILDABLE",
    "BuiltImage",
    "ImageBuildFailed",
    "ImageBuilder",
    "ImageNotFound",
    "ImageUnsupported",
    "LogFn",
    "Plan",
    "RunContainer",
    "base_environ",
    "node_steps",
    "runtime_dirs",
]
