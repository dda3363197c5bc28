"""A built image as its containers use it: environment, mounts and root file system (`BuiltImage`)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import _protocol as P
from ..backends import Mount
from .rootfs import DEBIAN_PATH

# All that a container keeps of the environment of whoever started the control plane: what any process
# expects to find (where programs are, whose session it is, how to print text). Everything else there
# (credentials exported in that shell, its interpreter's settings) stays out; a function gets variables
# only from its image's `env`, its secrets and its `env=`.
BASE_ENV_VARS = frozenset({"PATH", "HOME", "LANG", "LANGUAGE", "TERM", "TZ", "USER", "LOGNAME"})


def base_environ(server_env: Mapping[str, str]) -> dict[str, str]:
    """The allowlisted part of the control plane's environment (`BASE_ENV_VARS` and the `LC_*` locale)."""
    return {k: v for k, v in server_env.items() if k in BASE_ENV_VARS or k.startswith("LC_")}


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
        env.update(self.env)
        env[P.ENV_RUNTIME_PATH] = runtime_path  # not the image's to name (its entries stay in every container's view)
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
        out += [Mount(p, p, read_only=True) for p in existing_outermost(code_dirs)]
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


def existing_outermost(dirs: list[str]) -> list[str]:
    """The directories among `dirs` that exist, without those inside another one of them."""
    return outermost(d for d in dirs if d and os.path.isdir(d))


def outermost(dirs: Iterable[str]) -> list[str]:
    """Directories not inside another one of them (binding the outer one is enough)."""
    out: list[str] = []
    for d in sorted({os.path.realpath(d) for d in dirs}):
        if not any(under(d, o) for o in out):
            out.append(d)
    return out


def under(path: str, target: str) -> bool:
    return path == target or path.startswith(target.rstrip("/") + "/")
