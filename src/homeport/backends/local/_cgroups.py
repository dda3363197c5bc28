"""Kernel-enforced limits for local containers, and a handle on every process they start (cgroup v1 or v2).

Every container gets its own cgroup (limited in cpu and memory when it asks, and always in how many
processes it may hold: `pids_max`, `DEFAULT_PIDS_MAX` unless `HOMEPORT_CONTAINER_PIDS_MAX` says otherwise,
0 for no limit), so that stopping it stops everything it started (`Cgroup.kill`: `cgroup.kill` on v2,
freeze, SIGKILL every member and thaw where that is missing, or on v1 with the freezer controller),
even a double-forked `setsid` daemon that left its process group. Each cgroup is made created under the control plane's own cgroup (so whatever
limits the control plane lives under still apply), before the container's process exists: the process
is in it before it runs anything (a spawned one joins it itself, `Cgroup.joining`; a forked one waits
until the backend has put it there, see `_templates`), so no memory it uses escapes the limit. After a container exits, its cgroup says whether
the kernel killed something in it for exceeding the memory limit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
CPU_PERIOD_US = 100_000
# How many processes (and threads: each counts) one container may hold unless it is configured otherwise:
# ample for a runtime, its thread pools and a data loader's workers, and it stops a fork bomb.
DEFAULT_PIDS_MAX = 4096
ENV_PIDS_MAX = "HOMEPORT_CONTAINER_PIDS_MAX"
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


def pids_max_setting(environ: dict[str, str] | None = None) -> int | None:
    """The per-container process limit this control plane applies (None: no limit)."""
    raw = (environ if environ is not None else os.environ).get(ENV_PIDS_MAX, "").strip()
    if not raw:
        return DEFAULT_PIDS_MAX
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{ENV_PIDS_MAX} must be a whole number of processes (0: no limit), not {raw!r}") from None
    if value < 0:
        raise ValueError(f"{ENV_PIDS_MAX} must be 0 (no limit) or more, not {value}")
    return value or None


@dataclass
class Cgroup:
    dirs: list[Path]
    version: int
    pids: Path | None = None  # the directory with pids.max / pids.events (None: no process limit)
    freezer: Path | None = None  # v1: the freezer directory; v2: the cgroup itself (cgroup.freeze)
    pids_max: int | None = None

    def pids_limit_hit(self) -> int:
        """How many times a fork in this cgroup failed at its process limit."""
        if self.pids is None:
            return 0
        with contextlib.suppress(OSError, ValueError):
            for line in (self.pids / "pids.events").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "max":
                    return int(value)
        return 0

    def members(self) -> list[int]:
        out: set[int] = set()
        for d in {*self.dirs, *([self.freezer] if self.freezer else [])}:
            with contextlib.suppress(OSError, ValueError):
                out.update(int(x) for x in (d / "cgroup.procs").read_text().split())
        return sorted(out)

    def kill(self) -> bool:
        """SIGKILL every process in the cgroup, forked daemons included; False where it cannot."""
        if self.freezer is None:
            return False
        if self.version == 2 and (self.freezer / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (self.freezer / "cgroup.kill").write_text("1")
                return True
        # Frozen, nothing in it can fork while its members are killed one by one.
        state, frozen, thawed = (("cgroup.freeze", "1", "0") if self.version == 2
                                 else ("freezer.state", "FROZEN", "THAWED"))
        try:
            (self.freezer / state).write_text(frozen)
        except OSError:
            return False
        try:
            for _ in range(3):
                pids = self.members()
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.001)
        finally:
            with contextlib.suppress(OSError):
                (self.freezer / state).write_text(thawed)
        return True

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
    def __init__(self, root: Path = ROOT, pids_max: int | None = DEFAULT_PIDS_MAX) -> None:
        self.root = root
        self.version = 2 if (root / "cgroup.controllers").exists() else 1
        self.pids_max = pids_max
        self._problem: str | None = None

    def create(self, name: str, memory_limit_mib: int | None, cpu_limit: float | None) -> Cgroup:
        """A cgroup of its own for a container: with these limits, the process limit, and a way to kill it all."""
        if self._problem is not None:
            raise CgroupsUnavailable(self._problem)
        try:
            return self._create_v2(name, memory_limit_mib, cpu_limit) if self.version == 2 else \
                self._create_v1(name, memory_limit_mib, cpu_limit)
        except OSError as exc:
            self._problem = f"cgroup v{self.version} under {self.root} is not writable here ({exc})"
            raise CgroupsUnavailable(self._problem) from None

    def prepare_move(self) -> None:
        """Start now what the kernel waits for before it moves a process into a cgroup, for a move
        soon after (a container's, `Cgroup.add` or `joining`); blocking, so run it in a thread. The first
        move after a quiet while waits for an RCU grace period (`cgroup_threadgroup_rwsem`: ~10 ms, far
        more on a busy machine), and a move within a grace period of another does not: this one moves
        this process into the cgroup it is in already, which changes nothing."""
        if self._problem is not None:
            return
        own = _own_paths()
        if self.version == 2:
            procs = self.root / own.get("", "/").lstrip("/") / "cgroup.procs"
        else:
            ctrl = next((c for c in ("pids", "freezer", "memory") if c in own and (self.root / c).is_dir()), None)
            if ctrl is None:
                return
            procs = self.root / ctrl / own[ctrl].lstrip("/") / "cgroup.procs"
        with contextlib.suppress(OSError):
            procs.write_text(str(os.getpid()))

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
        pids = freezer = None
        if (self.root / "pids").is_dir():
            pids = self.root / "pids" / own.get("pids", "/").lstrip("/") / name
            pids.mkdir(exist_ok=True)
            dirs.append(pids)
            (pids / "pids.max").write_text(str(self.pids_max) if self.pids_max else "max")
        if (self.root / "freezer").is_dir():
            freezer = self.root / "freezer" / own.get("freezer", "/").lstrip("/") / name
            freezer.mkdir(exist_ok=True)
            dirs.append(freezer)
        if not dirs:
            raise OSError(f"none of the memory, cpu, pids and freezer controllers is mounted under {self.root}")
        return Cgroup(dirs, 1, pids=pids, freezer=freezer, pids_max=self.pids_max if pids else None)

    def _create_v2(self, name: str, memory_limit_mib: int | None, cpu_limit: float | None) -> Cgroup:
        parent = self.root / _own_paths().get("", "/").lstrip("/")
        wanted = [c for c, on in (("memory", memory_limit_mib), ("cpu", cpu_limit), ("pids", self.pids_max))
                  if on is not None]
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
        pids = None
        if self.pids_max is not None and (d / "pids.max").exists():
            (d / "pids.max").write_text(str(self.pids_max))
            pids = d
        return Cgroup([d], 2, pids=pids, freezer=d, pids_max=self.pids_max if pids else None)


def available() -> str | None:
    """None if limits can be enforced here, else why not."""
    if not ROOT.is_dir() or not os.access(ROOT, os.R_OK):
        return "no cgroup file system at /sys/fs/cgroup"
    return None
