"""Admission, part of the scheduler (`core.scheduler.Scheduler` inherits it): whether a container of
a pool fits what the machine offers (cpu, memory, GPUs), and which idle containers of other pools
stop to make room for it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import gpus as _gpus
from .pools import Capacity, Container, Instruction, Phase, Pool, PoolConfig, StopContainer


class Admission:
    capacity: Capacity | None
    gpus: tuple[_gpus.GpuDevice, ...]  # the machine's GPU inventory
    pools: dict[str, Pool]
    containers: dict[str, Container]

    if TYPE_CHECKING:
        def _reconcile(self, pool: Pool, now: float, allow_start: bool = True) -> list[Instruction]: ...

    def _used(self) -> tuple[float, int]:
        cpu, mem = 0.0, 0
        for c in self.containers.values():
            cfg = self.pools[c.pool].config
            cpu += cfg.cpu
            mem += cfg.memory_mib
        return cpu, mem

    def _fits(self, cfg: PoolConfig) -> bool:
        if self.capacity is None:
            return True
        cpu, mem = self._used()
        return cpu + cfg.cpu <= self.capacity.cpu + 1e-9 and mem + cfg.memory_mib <= self.capacity.memory_mib

    def _make_room(self, pool: Pool) -> list[Instruction]:
        """Stop idle containers of other pools (never below their `min_containers`) until the freed
        cpu and memory, counting containers already stopping, admit one container of `pool`.

        Warm idle containers are a cache: they should not keep a busy function waiting for a whole
        scale-down window.
        """
        cap = self.capacity
        assert cap is not None  # called only when `_fits` said no, which needs a capacity
        cfg = pool.config
        cpu_used, mem_used = self._used()
        cpu_free, mem_free = cap.cpu - cpu_used, cap.memory_mib - mem_used
        for c in self.containers.values():
            if c.phase is Phase.STOPPING:
                cpu_free += self.pools[c.pool].config.cpu
                mem_free += self.pools[c.pool].config.memory_mib

        def fits() -> bool:
            return cfg.cpu <= cpu_free + 1e-9 and cfg.memory_mib <= mem_free

        if fits():
            return []  # what is already stopping will make room
        out: list[Instruction] = []
        live = {p.id: sum(1 for c in p.containers.values() if c.phase is not Phase.STOPPING) for p in self.pools.values()}
        idle = sorted(
            (c for c in self.containers.values()
             if c.pool != pool.id and c.phase is Phase.READY and not c.assigned),
            key=lambda c: c.last_active,
        )
        for c in idle:
            if fits():
                break
            other = self.pools[c.pool]
            if live[other.id] <= other.config.min_containers:
                continue
            live[other.id] -= 1
            c.phase = Phase.STOPPING
            cpu_free += other.config.cpu
            mem_free += other.config.memory_mib
            out.append(StopContainer(c.id, f"idle; stopped to make room for a container of {pool.id}"))
        return out

    def gpus_busy(self) -> set[str]:
        """UUIDs of the GPUs held by a container (one that is stopping holds them until it exits)."""
        return {u for c in self.containers.values() for u in c.gpus}

    def _make_room_gpu(self, pool: Pool) -> list[Instruction]:
        """Stop idle containers of other pools (never below their `min_containers`) that hold GPUs
        this pool's request could use, until one container of it would get its devices."""
        request = pool.config.gpu
        busy = self.gpus_busy()
        held = {u for c in self.containers.values() if c.phase is Phase.STOPPING for u in c.gpus}
        if _gpus.choose(request, self.gpus, busy - held) is not None:
            return []  # what is already stopping will free them
        usable = {d.uuid for kind, _ in request for d in _gpus.matching(kind, self.gpus)}
        live = {p.id: sum(1 for c in p.containers.values() if c.phase is not Phase.STOPPING) for p in self.pools.values()}
        out: list[Instruction] = []
        idle = sorted((c for c in self.containers.values() if c.pool != pool.id and c.phase is Phase.READY
                       and not c.assigned and usable.intersection(c.gpus)), key=lambda c: c.last_active)
        for c in idle:
            other = self.pools[c.pool]
            if live[other.id] <= other.config.min_containers:
                continue
            live[other.id] -= 1
            c.phase = Phase.STOPPING
            held.update(c.gpus)
            out.append(StopContainer(c.id, f"idle; stopped to free its GPU for a container of {pool.id}"))
            if _gpus.choose(request, self.gpus, busy - held) is not None:
                break
        return out

    def too_big(self, cfg: PoolConfig) -> str | None:
        """Why a container of this pool can never start on this machine, if it cannot."""
        if cfg.gpu:
            why = _gpus.infeasible(cfg.gpu, self.gpus)
            if why is not None:
                return why
        cap = self.capacity
        if cap is None:
            return None
        if cfg.cpu > cap.cpu:
            return f"it requests cpu={cfg.cpu:g} but this machine offers {cap.cpu:g} cores; lower `cpu`"
        if cfg.memory_mib > cap.memory_mib:
            return f"it requests memory={cfg.memory_mib} MiB but this machine offers {cap.memory_mib} MiB; lower `memory`"
        return None

    def set_capacity(self, capacity: Capacity, now: float) -> list[Instruction]:
        """What containers may request in all changed (a cluster's nodes joined or left): with more,
        containers waiting for room start now; with less, running ones are left alone (none is stopped
        to fit) and no new one starts until they fit again."""
        grew = self.capacity is None or (capacity.cpu > self.capacity.cpu or capacity.memory_mib > self.capacity.memory_mib)
        self.capacity = capacity
        return self._admit_waiting(now) if grew else []

    def _admit_waiting(self, now: float, skip: str | None = None) -> list[Instruction]:
        """Capacity was freed: pools with containers waiting for it may start them now."""
        out: list[Instruction] = []
        for other in list(self.pools.values()):
            if other.id != skip and other.active and other.pending:
                out += self._reconcile(other, now)
        return out
