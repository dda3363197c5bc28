"""How a container's process is wrapped so that it sees its own file system view.

`command(spec)` turns the container's argv into the argv the local backend executes. Without mounts or
a root file system image the container runs directly; with them it runs under a namespace sandbox.
"""

from __future__ import annotations

from ...exception import UnimplementedError
from .._base import ContainerSpec
from . import _rootfs


def command(spec: ContainerSpec) -> list[str]:
    if spec.rootfs:
        return _rootfs.command(spec)
    if spec.mounts:
        raise UnimplementedError("Volumes and root file system images are not supported by the local backend yet.")
    return list(spec.argv)
