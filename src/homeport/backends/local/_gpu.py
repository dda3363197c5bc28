"""What of the host's NVIDIA driver a container sees: its own GPUs and nothing else.

The way the NVIDIA container toolkit does it: the container's /dev holds the host's device nodes but
for the GPUs (`/dev/nvidiaN`) it was not given; with at least one GPU it also gets the control nodes
(`/dev/nvidiactl`, `/dev/nvidia-uvm`, `/dev/nvidia-uvm-tools`, `/dev/nvidia-modeset`, `/dev/nvidia-caps`);
the driver's user-space libraries (`libcuda`, `libnvidia-ml`, the PTX JIT ...) and tools (`nvidia-smi`)
are bound read-only at their host paths, which matters in a root-file-system image, which has none.
`CUDA_VISIBLE_DEVICES` / `NVIDIA_VISIBLE_DEVICES` (by UUID) are set by the control plane.

`dev_entries`, `driver_mounts` are pure (host paths in, bind arguments out) and tested without a GPU;
`host_dev_entries`, `host_driver_files` read the host.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .._base import Mount

_GPU_NODE = re.compile(r"^nvidia(\d+)$")
CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset", "nvidia-caps")
# The driver's user-space: the compute and utility libraries the toolkit mounts, and its tools.
DRIVER_LIBRARIES = ("libcuda.so", "libcudadebugger.so", "libnvidia-ml.so", "libnvidia-ptxjitcompiler.so",
                    "libnvidia-nvvm.so", "libnvidia-gpucomp.so", "libnvidia-cfg.so", "libnvidia-allocator.so")
DRIVER_TOOLS = ("nvidia-smi", "nvidia-debugdump")


@dataclass(frozen=True)
class DevEntry:
    """One entry of the container's /dev: a host path bound there, or a symlink (`link` its target)."""

    name: str
    link: str | None = None


def has_gpu_nodes(entries: Iterable[str]) -> bool:
    return any(_GPU_NODE.match(e) or e in CONTROL_NODES for e in entries)


def dev_entries(host: Sequence[tuple[str, str | None]], gpus: Sequence[int]) -> list[DevEntry]:
    """The container's /dev from the host's (`(name, symlink target or None)` of each top-level entry):
    everything but the GPU nodes it was not given, and the control nodes only when it has a GPU."""
    mine = set(gpus)
    out = []
    for name, link in sorted(host):
        m = _GPU_NODE.match(name)
        if m is not None and int(m.group(1)) not in mine:
            continue
        if name in CONTROL_NODES and not mine:
            continue
        out.append(DevEntry(name, link))
    return out


def driver_mounts(files: Sequence[tuple[str, str]]) -> list[Mount]:
    """Read-only binds of the driver's files (`(path as the container should see it, the real file)`),
    for a container in a root file system image (in the host's view they are there already)."""
    return [Mount(real, path, read_only=True) for path, real in sorted(set(files))]


def bwrap_dev_args(entries: Sequence[DevEntry]) -> list[str]:
    """bubblewrap arguments that build /dev from `entries` (instead of `--dev-bind /dev /dev`)."""
    args = ["--tmpfs", "/dev"]
    for e in entries:
        path = "/dev/" + e.name
        if e.link is not None:
            args += ["--symlink", e.link, path]
        else:
            args += ["--dev-bind", path, path]
    return args


def rootfs_dev_spec(entries: Sequence[DevEntry]) -> str:
    """The root-file-system script's /dev argument: `name` (bound) or `name>target` (a symlink), by '/'."""
    return "/".join(e.name if e.link is None else f"{e.name}>{e.link}" for e in entries)


# --- the host -------------------------------------------------------------------------------------


def host_dev_entries(dev: str = "/dev") -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    try:
        names = os.listdir(dev)
    except OSError:
        return out
    for name in names:
        path = os.path.join(dev, name)
        out.append((name, os.readlink(path) if os.path.islink(path) else None))
    return out


_driver_files: list[tuple[str, str]] | None = None


def host_driver_files() -> list[tuple[str, str]]:
    """(path, real file) of the driver's libraries (as `ldconfig -p` lists them) and tools; cached."""
    global _driver_files
    if _driver_files is not None:
        return _driver_files
    out: list[tuple[str, str]] = []
    try:
        listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        listing = ""
    for line in listing.splitlines():
        if "=>" not in line:
            continue
        name, path = line.split("=>", 1)
        lib = name.strip().split(" ", 1)[0]
        path = path.strip()
        if lib.startswith(DRIVER_LIBRARIES) and os.path.exists(path):
            out.append((path, os.path.realpath(path)))
    # A driver installed outside the linker's cache (/usr/local/nvidia, as some GPU hosts mount it).
    seen = {path for path, _ in out}
    cached = len(out)
    for d in [*(os.environ.get("LD_LIBRARY_PATH") or "").split(":"), "/usr/local/nvidia/lib64"]:
        if not d or not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            path = os.path.join(d, name)
            if name.startswith(DRIVER_LIBRARIES) and path not in seen and os.path.exists(path):
                out.append((path, os.path.realpath(path)))
    for tool in DRIVER_TOOLS:
        for d in ("/usr/bin", "/usr/local/bin", "/usr/sbin", "/usr/local/nvidia/bin"):
            path = os.path.join(d, tool)
            if os.path.exists(path):
                out.append((path, os.path.realpath(path)))
                break
    _driver_files = out
    global _extra_dirs
    _extra_dirs = sorted({os.path.dirname(path) for path, _ in out[cached:] if ".so" in path})
    return out


_extra_dirs: list[str] = []


def library_env(env: dict[str, str], gpus: Sequence[int]) -> dict[str, str]:
    """`env` with the driver's library directories that the linker's cache lacks on LD_LIBRARY_PATH
    (a container keeps none of the host's variables), for a container (or template) given GPUs."""
    if not gpus:
        return env
    host_driver_files()
    if not _extra_dirs:
        return env
    paths = [p for p in (env.get("LD_LIBRARY_PATH") or "").split(":") if p]
    return {**env, "LD_LIBRARY_PATH": ":".join(paths + [d for d in _extra_dirs if d not in paths])}


def container_dev(gpus: Sequence[int]) -> list[DevEntry] | None:
    """The /dev of a container (or template) given these GPUs; None on a host without GPU nodes, where
    the host's /dev is kept as it is."""
    host = host_dev_entries()
    if not has_gpu_nodes(name for name, _ in host):
        return None
    return dev_entries(host, gpus)


def with_driver(mounts: tuple[Mount, ...], rootfs: str | None, gpus: Sequence[int]) -> tuple[Mount, ...]:
    """A root file system image has none of the host's driver: its files are bound in read-only."""
    if not rootfs or not gpus:
        return mounts
    return mounts + tuple(driver_mounts(host_driver_files()))
