"""The one driver of the pure scheduler: it tells `core.scheduler.Scheduler` what happened and carries
out the instructions it answers with.

Every other service goes through an `Executor` method, so the order in which the scheduler hears of
events (and the instructions they cause are executed) is decided in one place.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from .. import _protocol as P
from ..backends import Backend
from .core.policy import InputIds
from .core.scheduler import (
    Assign,
    Capacity,
    Container,
    FailInputs,
    InputsTimedOut,
    Instruction,
    Pool,
    PoolConfig,
    RequeueInputs,
    RestartBackoff,
    Scheduler,
    StartContainer,
    StartupTimedOut,
    StopContainer,
)
from .records import STOP_GRACE_SECONDS, ContainerRecord, Registry

if TYPE_CHECKING:
    from .web import WebEndpoints

log = logging.getLogger("homeport.server")


class Supervision(Protocol):
    def inputs_timed_out(self, ins: InputsTimedOut) -> None: ...
    def startup_timed_out(self, ins: StartupTimedOut) -> None: ...
    def start_failed(self, ins: RestartBackoff, rec: ContainerRecord | None) -> None: ...


class Effects(Protocol):
    """What executing an instruction needs from the other services (the control plane composes them)."""

    @property
    def web(self) -> WebEndpoints | None: ...
    @property
    def supervisor(self) -> Supervision: ...

    def start_container(self, ins: StartContainer) -> None: ...
    def fail_inputs(self, ins: FailInputs) -> None: ...


class Executor:
    def __init__(self, scheduler: Scheduler, registry: Registry, backend: Backend,
                 spawn: Callable[[Any], asyncio.Task], effects: Effects) -> None:
        self._scheduler = scheduler
        self.registry = registry
        self.backend = backend
        self.spawn = spawn
        self.effects = effects
        self.input_ids = InputIds()
        # Container id -> inputs assigned in this event-loop turn to a container that was busy, sent as
        # one INPUTS message at its end (`send_assigned`): many callers' calls travel in one frame.
        self._assigned_out: dict[str, list] = {}
        self.refresh_capacity()

    # --- executing decisions -----------------------------------------------------------------------
    def execute(self, instructions: list[Instruction]) -> None:
        containers = self.registry.containers
        inputs = self.registry.inputs
        is_web = self.input_ids.is_web
        for ins in instructions:
            if isinstance(ins, Assign):
                rec = containers.get(ins.container)
                items = []
                web = self.effects.web
                for iid in ins.inputs:
                    inp = None if is_web(iid) else inputs.get(iid)
                    if inp is None:
                        if web is not None:
                            # A web request (the gateway forwards it), or an input answered meanwhile:
                            # the gateway frees the slot of what it is not waiting for.
                            web.assigned(ins.container, iid)
                        continue
                    if inp.left is None:
                        items.append(P.InputRow(iid, inp.args, inp.method, inp.call.call_id))
                    else:  # a chunk some of whose inputs are done: the others
                        inp.sent = keys = sorted(inp.left)
                        args = inp.args
                        assert isinstance(args, list)  # (only a chunk has inputs left)
                        items.append(P.InputRow(iid, [args[k] for k in keys], inp.method, inp.call.call_id))
                if items and rec is not None and rec.proto is not None:
                    held = self._assigned_out.get(ins.container)
                    if held is not None:
                        held.extend(items)
                        continue
                    c = self._scheduler.containers.get(ins.container)
                    if c is None or len(c.assigned) <= len(ins.inputs):
                        # It held nothing else (a warm call): no reason to wait for the turn's end.
                        rec.proto.send(P.Inputs(items=items))
                        continue
                    try:
                        loop = asyncio.get_running_loop()
                    except RuntimeError:  # not on the event loop: nothing to gather with
                        rec.proto.send(P.Inputs(items=items))
                        continue
                    if not self._assigned_out:
                        loop.call_soon(self.send_assigned)
                    self._assigned_out[ins.container] = items
            elif isinstance(ins, StartContainer):
                self.effects.start_container(ins)
            elif isinstance(ins, StopContainer):
                rec = containers.get(ins.container)
                log.info("%s container %s: %s", "stopping" if rec is None or rec.ready_at is not None
                         else "cancelling (not ready)", ins.container, ins.reason)
                if rec is not None:
                    rec.state = "stopping"
                    if rec.stop_requested_at is None:
                        rec.stop_requested_at = time.monotonic()
                if rec is not None and rec.ready_at is None:
                    # Not ready: no enter hook has finished, so no exit hook is owed: cancel it at once
                    # (a scale-out container a short map no longer needs), rather than wait out the grace.
                    self.spawn(self.backend.kill(ins.container))
                else:
                    self.spawn(self.backend.stop(ins.container, STOP_GRACE_SECONDS))
            elif isinstance(ins, FailInputs):
                self.effects.fail_inputs(ins)
            elif isinstance(ins, RequeueInputs):
                pass  # the scheduler already put them back in the queue
            elif isinstance(ins, InputsTimedOut):
                self.effects.supervisor.inputs_timed_out(ins)
            elif isinstance(ins, StartupTimedOut):
                self.effects.supervisor.startup_timed_out(ins)
            elif isinstance(ins, RestartBackoff):
                self.effects.supervisor.start_failed(ins, containers.get(ins.container))

    def send_assigned(self) -> None:
        """Send each container the inputs assigned to it since the last call, in one message."""
        out, self._assigned_out = self._assigned_out, {}
        for cid, items in out.items():
            rec = self.registry.containers.get(cid)
            if rec is not None and rec.proto is not None:
                rec.proto.send(P.Inputs(items=items))

    # --- time --------------------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        return self._scheduler.next_deadline()

    def tick(self) -> None:
        now = time.monotonic()
        self.refresh_capacity(now)
        self.execute(self._scheduler.tick(now))

    def refresh_capacity(self, now: float | None = None) -> None:
        """A backend of more than one machine (Ray) offers the cluster's cores and memory, not this machine's."""
        offered = self.backend.capacity() if self.backend is not None else None
        if offered is None:
            return
        capacity = Capacity(cpu=float(offered[0]), memory_mib=int(offered[1]))
        if capacity != self._scheduler.capacity:
            log.info("capacity for containers: %g cores, %d MiB (from the %s backend)", capacity.cpu,
                     capacity.memory_mib, self.backend.name)
            self.execute(self._scheduler.set_capacity(capacity, time.monotonic() if now is None else now))

    # --- pools -------------------------------------------------------------------------------------
    def pool(self, pool_id: str) -> Pool | None:
        """What the scheduler knows of a pool (read only)."""
        return self._scheduler.pools.get(pool_id)

    def pools(self) -> list[Pool]:
        return list(self._scheduler.pools.values())

    @property
    def capacity(self) -> Capacity | None:
        return self._scheduler.capacity

    def gpu_holders(self) -> dict[str, str]:
        """GPU UUID -> the container that holds it."""
        return {u: cid for cid, c in self._scheduler.containers.items() for u in c.gpus}

    def add_pool(self, pool_id: str, config: PoolConfig, now: float | None = None) -> None:
        self.execute(self._scheduler.add_pool(pool_id, config, time.monotonic() if now is None else now))

    def remove_pool(self, pool_id: str, reason: str) -> None:
        self.execute(self._scheduler.remove_pool(pool_id, reason))

    def retire_pool(self, pool_id: str) -> None:
        self.execute(self._scheduler.retire_pool(pool_id, time.monotonic()))

    # --- inputs ------------------------------------------------------------------------------------
    def submit(self, pool_id: str, input_ids: list[int], callers: bool = False) -> None:
        """Queue inputs; `callers`: a caller blocks on each (a unary call), which the autoscaler counts."""
        self.execute(self._scheduler.submit(pool_id, input_ids, time.monotonic(), callers=callers))

    def submit_web_request(self, pool_id: str, iid: int, preferred: str | None) -> None:
        """Queue web request `iid` (from `input_ids.web_request()`) for a container of the pool (`preferred`,
        its session's, when it has a free slot); `web_request_done` or `cancel` end it."""
        now = time.monotonic()
        direct = self._scheduler.submit_to(pool_id, preferred, iid, now) if preferred else None
        self.execute(direct if direct is not None else self._scheduler.submit(pool_id, [iid], now))

    def web_request_done(self, cid: str, iid: int, t0: float) -> None:
        now = time.monotonic()
        self.execute(self._scheduler.inputs_done(cid, [iid], now - t0, now))

    def cancel(self, pool_id: str, input_ids: set[int]) -> bool:
        return self._scheduler.cancel(pool_id, input_ids)

    def holds(self, cid: str, input_id: int) -> bool:
        return self._scheduler.holds(cid, input_id)

    def holder_of(self, input_id: int) -> str | None:
        return self._scheduler.holder_of(input_id)

    def restart_clock(self, cid: str, input_id: int, now: float) -> None:
        """A chunk `cid` runs reported some of its inputs: its deadline counts from now (see `Scheduler`)."""
        self._scheduler.restart_clock(cid, input_id, now)

    def ready_containers(self, pool_id: str) -> list[str]:
        return self._scheduler.ready_containers(pool_id)

    def inputs_done(self, cid: str, input_ids: Iterable[int], seconds: float, now: float,
                    cpu_seconds: float | None) -> list[Instruction]:
        """Tell the scheduler; what it answers is for the caller to `execute` once it delivered the outputs."""
        return self._scheduler.inputs_done(cid, input_ids, seconds, now, cpu_seconds=cpu_seconds)

    # --- containers --------------------------------------------------------------------------------
    def container_connected(self, cid: str) -> None:
        self._scheduler.container_connected(cid, time.monotonic())

    def container_ready(self, cid: str, now: float) -> None:
        self.execute(self._scheduler.container_ready(cid, now))

    def release(self, cid: str, input_ids: Iterable[int], now: float, leaving: bool) -> None:
        self.execute(self._scheduler.release(cid, input_ids, now, leaving=leaving))

    def container(self, cid: str) -> Container | None:
        """What the scheduler knows of a container (read only: its inputs, what it served)."""
        return self._scheduler.containers.get(cid)

    def stop_container(self, cid: str, reason: str) -> bool:
        """Stop a container the user named; False when there is no such container."""
        ins = self._scheduler.stop_container(cid, reason)
        if not ins:
            return False
        self.execute(ins)
        return True

    def container_exited(self, cid: str, reason: str, init_failed: bool, crashed: bool) -> list[Instruction]:
        """Tell the scheduler; the caller executes what it answers (failing inputs with the container's
        start-up failure where it reported one)."""
        return self._scheduler.container_exited(cid, time.monotonic(), reason, init_failed=init_failed, crashed=crashed)
