"""What a container needs to find on its node's disk at the control plane's paths, and what a node lacks.

Containers on Ray run the image environments the control plane built (in its state directory) and mount
their volumes (under HOMEPORT_SHARED_ROOT): a node that does not see those paths cannot run them, and
must say so, naming the path, rather than fail obscurely inside the sandbox. Pure: `exists` is injected.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ..._protocol import ENV_RUNTIME_PATH, ENV_SHARED_ROOT
from .._base import ContainerSpec


def needed_paths(spec: ContainerSpec) -> list[tuple[str, str]]:
    """(what, path) for each host path the container cannot start without."""
    out: list[tuple[str, str]] = []
    if spec.argv and os.path.isabs(spec.argv[0]):
        out.append(("the image environment's interpreter", spec.argv[0]))
    if spec.rootfs:
        out.append(("the image's root file system", spec.rootfs))
    for path in (spec.env.get(ENV_RUNTIME_PATH) or "").split(os.pathsep):
        if path:
            out.append(("the Homeport runtime", path))
    for mount in spec.mounts:
        out.append((f"the directory mounted at {mount.target}", mount.source))
    return out


def missing_on_node(spec: ContainerSpec, node: str, exists: Callable[[str], bool] = os.path.exists) -> str | None:
    """Why this node cannot run the container (None: it can)."""
    missing = [(what, path) for what, path in needed_paths(spec) if not exists(path)]
    if not missing:
        return None
    what, path = missing[0]
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    return (f"Ray node {node} does not see {what}, {path}{more}: every node must see the control plane's image "
            f"directory and {ENV_SHARED_ROOT} at the same paths (a shared file system, or run the nodes on the "
            "control plane's machine)")
