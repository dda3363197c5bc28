"""How a container's process is wrapped so that it sees its own file system view.

`command(spec)` turns the container's argv into the argv the local backend executes. Without mounts
the container runs directly. With mounts (volumes) it runs under bubblewrap in its own mount
namespace: the root is a fresh tmpfs into which the host's top-level directories are bound, so a volume
appears at exactly the path the user gave (`/data`, `/cache` ...) even where the host has no such
directory, and nothing is created on the host.

bubblewrap exits at once on SIGTERM without passing it on, so it runs with SIGTERM ignored (inherited
through exec; the runtime installs its own handler): the backend's SIGTERM to the process group then
reaches the runtime, which runs the exit hooks, and bubblewrap leaves when the runtime does.
"""

from __future__ import annotations

import os
import shutil

from .._base import ContainerSpec
from . import _rootfs

_SPECIAL = {"proc", "dev", "sys", "tmp"}


class SandboxUnavailable(Exception):
    pass


def sandboxed(spec: ContainerSpec) -> bool:
    return bool(spec.mounts or spec.rootfs or (spec.private_network and shutil.which("bwrap")))


def network_note(spec: ContainerSpec) -> str | None:
    """What the user should know when a container cannot get the private network it asked for."""
    if spec.private_network and not spec.rootfs and shutil.which("bwrap") is None:
        return ("homeport: bubblewrap is not installed, so this web server shares the machine's network and "
                "its replicas cannot all listen on the same port; install it (`apt-get install bubblewrap`) "
                "to give every container its own network\n")
    return None


def command(spec: ContainerSpec) -> list[str]:
    if spec.rootfs:
        return _rootfs.command(spec)  # the image's own root file system, mounts bound into it
    if not spec.mounts and not spec.private_network:
        return list(spec.argv)
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        if not spec.mounts:
            return list(spec.argv)  # `network_note` tells the user
        raise SandboxUnavailable(
            "volumes are mounted with bubblewrap, which is not installed on this machine; "
            "install it (Debian/Ubuntu: `apt-get install bubblewrap`) and try again"
        )
    net = ["--unshare-net"] if spec.private_network else []
    if not spec.mounts:  # only a network of its own: the machine's file system as it is
        chdir = ["--chdir", spec.cwd] if spec.cwd else []
        return ["sh", "-c", 'trap "" TERM; exec "$@"', "sh", bwrap, "--dev-bind", "/", "/", *net, *chdir,
                "--", *spec.argv]
    args = [bwrap, *net, "--tmpfs", "/"]
    for entry in sorted(os.listdir("/")):
        path = "/" + entry
        if entry in _SPECIAL:
            continue
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--dev-bind", path, path]
    args += ["--proc", "/proc", "--dev-bind", "/dev", "/dev", "--bind", "/tmp", "/tmp"]
    if os.path.isdir("/sys"):
        args += ["--ro-bind", "/sys", "/sys"]
    for m in sorted(spec.mounts, key=lambda m: m.target.count("/")):
        if os.path.isdir(m.source):  # a file (an image's `add_local_file`) gets a file mount point
            args += ["--dir", m.target]
        args += ["--ro-bind" if m.read_only else "--bind", m.source, m.target]
    if spec.cwd:
        args += ["--chdir", spec.cwd]
    return ["sh", "-c", 'trap "" TERM; exec "$@"', "sh", *args, "--", *spec.argv]
