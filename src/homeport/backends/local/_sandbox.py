"""How a container's process is wrapped so that it sees its own file system view.

`command(spec)` turns the container's argv into the argv the local backend executes. Without mounts or
a root file system image the container runs directly; with them it runs under a namespace sandbox.
"""

from __future__ import annotations

from ...exception import UnimplementedError
from .._base import ContainerSpec


def command(spec: ContainerSpec) -> list[str]:
    if spec.mounts or spec.rootfs:
        raise UnimplementedError("Volumes and root file system images are not supported by the local backend yet.")
    return list(spec.argv)
