"""What an app sends to the control plane when it runs or deploys: its images (built, or found cached), each
function's definition and pool settings, what `Cls.from_name` needs of a class, and a version's metadata."""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
from typing import Any

from . import _build_log, _config
from . import _protocol as P
from ._client import default_log_printer
from ._cls_body import _NO_DEFAULT
from ._definition import Registered
from ._image import Image
from ._image_request import build_request, distinct
from ._options import volume_refs
from ._progress import ImageBuildStatus, interactive
from ._protocol.definition import FunctionDefinition, to_wire
from ._version import __version__


def deploy_meta(tag: str) -> dict[str, str]:
    """What `modal app history` shows of a version: its tag, the client, who deployed it and the git commit
    of the working directory (when it is a git checkout)."""
    commit = ""
    try:
        out = subprocess.run(["git", "rev-parse", "--short=7", "HEAD"], capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            commit = out.stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                   text=True, timeout=5)
            if dirty.returncode == 0 and dirty.stdout.strip():
                commit += "-dirty"
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = ""
    return {"tag": tag or "", "client": f"homeport {__version__}", "deployed_by": user, "commit": commit}


async def with_images(client: Any, regs: list[Registered], show_logs: bool = False) -> list[FunctionDefinition]:
    """Have the control plane build (or find cached) the image of each function; return the functions'
    definitions naming their image. A function without `image=` runs in `Image.debian_slim()`."""
    images = [r.options.image or Image.debian_slim() for r in regs]
    unique = distinct(images)
    if not unique:
        return []
    requests = [build_request(image) for image in unique]
    saved = client.log_handler
    printer = saved
    if show_logs and saved is None:
        printer = lambda msg: default_log_printer(msg) if msg.get("fn") == "image" else None  # noqa: E731
    status = ImageBuildStatus()  # on a terminal: a spinner naming the step being built
    summary = None
    if _build_log.summarise_wanted(interactive()):  # on a terminal: the steps; the rest in a file
        summary = _build_log.BuildLogSummary(os.path.join(str(_config.state_dir()), "image-logs"))

    def on_log(msg: dict[str, Any]) -> None:
        status.on_log(msg)
        if summary is not None and msg.get("fn") == "image" and not summary.feed(_build_log.printable(msg)):
            return
        if printer is not None:
            printer(msg)

    client.log_handler = on_log
    failed = True
    try:
        # No deadline: a build takes as long as its steps do, each bounded by the control plane.
        ids = await client.request(P.ImageBuild(images=requests), timeout=None)
        failed = False
    finally:
        client.log_handler = saved
        status.close()
        if summary is not None and printer is not None:
            for line in summary.close(failed):
                printer({"fn": "image", "cid": "", "fd": 2, "data": line})
    hashes = [image.content_hash() for image in unique]
    return [
        P.replace(r.definition, image_id=ids[unique.index(image)], image_hash=hashes[unique.index(image)])
        for r, image in zip(regs, images)
    ]


def lookup_info(obj: Any) -> dict[str, Any]:
    """What `Cls.from_name` needs to know about a deployed class: its methods (and which of them are
    web endpoints, called over HTTP only) and parameters."""
    methods = getattr(obj, "_methods", None)
    if methods is None or not hasattr(obj, "_params"):
        return {}
    params = {}
    for pname, (typ, default, *_) in obj._params.items():
        params[pname] = {"type": typ.__name__, "has_default": default is not _NO_DEFAULT, "default": None if default is _NO_DEFAULT else default}
    return {"methods": {m: {"is_generator": bool(info.get("is_generator")), "batched": info.get("batched")}
                        for m, info in methods.items()},
            "web_methods": sorted(m for m in getattr(obj, "_web_methods", {}) if m is not None),
            "params": params,
            "options": {"startup_timeout_set": obj._options.startup_timeout is not None}}


def wire_config(reg: Registered) -> dict[str, Any]:
    """A function's pool settings as published: with its volumes, which have their names once the app runs."""
    return to_wire(P.replace(reg.config, volumes=volume_refs(reg.options)))


def print_web_urls(reply: dict[str, Any]) -> None:
    for name, url in sorted((reply.get("web_urls") or {}).items()):
        print(f"✓ Created web endpoint for {name} => {url}", file=sys.stderr, flush=True)
