"""Kernel-enforced cpu and memory limits for local containers (cgroup v1 or v2).

Each limited container gets its own cgroup, created under the control plane's own cgroup (so whatever
limits the control plane lives under still apply), before the container's process exists: the process
is in it before it runs anything (a spawned one joins it itself, `Cgroup.joining`; a forked one waits
until the backend has put it there, see `_templates`), so no memory it uses escapes the limit. After a container exits, its cgroup says whether
the kernel killed something in it for exceeding the memory limit.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
CPU_PERIOD_US = 100_000
# $1: how many cgroup.procs files follow; then the command. `exec` keeps the pid that joined.
_JOIN = (
    'n=$1; shift; while [ "$n" -gt 0 ]; do '
    'echo $$ 2>/dev/null > "$1" || echo "homeport: cpu and memory limits are NOT enforced for this container: '
    'it could not join its cgroup ($1)" >&2; '
    'shift; n=$((n - 1)); done; exec "$@"'
)


class CgroupsUnavailable(Exception):
    pass


def _own_paths() -> dict[str, str]:
    """controller -> this process's cgroup path ("" key: the v2 unified hierarchy)."""
    out = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            out[c] = path
    return out


@dataclass
class Cgroup:
    dirs: list[Path]
    version: int

    def add(self, pid: int) -> None:
        for d in self.dirs:
            (d / "cgroup.procs").write_text(str(pid))

    def joining(self, argv: Sequence[str]) -> list[str]:
        """`argv` started by a shell that first moves itself into this cgroup and then execs it, so
        the process is limited before it runs anything (and every process it starts is too). Where
        the move fails it says so and runs anyway, as a container whose cgroup could not be made."""
        procs = [str(d / "cgroup.procs") for d in self.dirs]
        return ["/bin/sh", "-c", _JOIN, "homeport-cgroup", str(len(procs)), *procs, *argv]

    def oom_killed(self) -> bool:
        for d in self.dirs:
            name = "memory.events" if self.version == 2 else "memory.oom_control"
            with contextlib.suppress(OSError):
                for line in (d / name).read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and int(value) > 0:
                        return True
        return False

    def remove(self) -> None:
        for d in self.dirs:
            with contextlib.suppress(OSError):
                d.rmdir()


class Cgroups:
    def __init__(self, root: Path = ROOT) -> None:
        self.root = root
        self.version = 2 if (root / "cgroup.controllers").exists() else 1
        self._problem: str | None = None

    def create(self, name: str, memory_limit_mib: int | None, cpu_limit: float | None) -> Cgroup:
        if self._problem is not None:
            raise CgroupsUnavailable(self._problem)
        try:
            return self._create_v2(name, memory_limit_mib, cpu_limit) if self.version == 2 else \
                self._create_v1(name, memory_limit_mib, cpu_limit)
        except OSError as exc:
            self._problem = f"cgroup v{self.version} under {self.root} is not writable here ({exc})"
            raise CgroupsUnavailable(self._problem) from None

    def _create_v1(self, name: str, memory_limit_mib: int | None, cpu_limit: float | None) -> Cgroup:
        own = _own_paths()
        dirs = []
        if memory_limit_mib is not None:
            d = self.root / "memory" / own.get("memory", "/").lstrip("/") / name
            d.mkdir(exist_ok=True)
            dirs.append(d)
            limit = str(memory_limit_mib << 20)
            (d / "memory.limit_in_bytes").write_text(limit)
            with contextlib.suppress(OSError):  # no swap accounting: the memory limit alone holds
                (d / "memory.memsw.limit_in_bytes").write_text(limit)
        if cpu_limit is not None:
            ctrl = "cpu,cpuacct" if (self.root / "cpu,cpuacct").is_dir() else "cpu"
            d = self.root / ctrl / own.get("cpu", "/").lstrip("/") / name
            d.mkdir(exist_ok=True)
            dirs.append(d)
            (d / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
            (d / "cpu.cfs_quota_us").write_text(str(max(1000, int(cpu_limit * CPU_PERIOD_US))))
        return Cgroup(dirs, 1)

    def _create_v2(self, name: str, memory_limit_mib: int | None, cpu_limit: float | None) -> Cgroup:
        parent = self.root / _own_paths().get("", "/").lstrip("/")
        wanted = [c for c, on in (("memory", memory_limit_mib), ("cpu", cpu_limit)) if on is not None]
        enabled = (parent / "cgroup.subtree_control").read_text().split()
        missing = [c for c in wanted if c not in enabled]
        if missing:
            (parent / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in missing))
        d = parent / name
        d.mkdir(exist_ok=True)
        if memory_limit_mib is not None:
            (d / "memory.max").write_text(str(memory_limit_mib << 20))
            with contextlib.suppress(OSError):
                (d / "memory.swap.max").write_text("0")
        if cpu_limit is not None:
            (d / "cpu.max").write_text(f"{max(1000, int(cpu_limit * CPU_PERIOD_US))} {CPU_PERIOD_US}")
        return Cgroup([d], 2)


def available() -> str | None:
    """None if limits can be enforced here, else why not."""
    if not ROOT.is_dir() or not os.access(ROOT, os.R_OK):
        return "no cgroup file system at /sys/fs/cgroup"
    return None
