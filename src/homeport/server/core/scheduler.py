"""Queues, container lifecycle and scaling decisions for every function pool.

The scheduler is a state machine in the style of dask's worker state: the service tells it what
happened (inputs submitted, a container became ready or exited, outputs arrived, time passed) and it
answers with instructions (start a container, assign inputs to one, stop one, fail inputs). It never
does I/O, so it is tested with plain asserts and a fake clock.

Words (after dask's adaptive core): *observed* is what containers report; *requested* is what we asked
the backend for and have not seen yet; *plan* is the number of containers the pool should have.

Here: the events and the scaling decisions. Its data and instructions are in `core.pools`, admission
against the machine's capacity in `core.admission`, deadlines in `core.deadlines`.

Crashes (see `container_exited`), as Modal handles them: a container that dies unasked (a signal, the
kernel's OOM killer, an exit) at start-up or while running inputs is replaced, and every input it held
goes back to the front of the queue. Crash re-runs do NOT count against the function's `retries=`:
those are the user's policy for exceptions their code raises, while a crash is the platform losing the
input (often not the input's fault: a neighbour's OOM, an operator's kill); Modal likewise retries lost
inputs (INTERNAL_FAILURE) at once without using up the retry policy. Two bounds keep a crash loop from
running forever:

- an input that was running in `INPUT_CRASH_LIMIT` + 1 containers that crashed fails (a poison input);
- an ephemeral app's pool (`PoolConfig.fail_on_crashes`) fails its queued inputs once
  `POOL_CRASH_LIMIT` containers crashed in a row with no input completing in between (past that
  failure rate starting more containers is assumed to crash the same way). A deployed app's pool never
  fails its queue for crashes: it keeps restarting with the start-up backoff (crash-loop back-off).

A container that *reports* a start-up failure (an exception in the import or an enter hook, or a
start-up past `startup_timeout`) is different: the same code fails the same way, so the queue fails at
once with that error (`init_failed`).
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import replace

from . import gpus as _gpus
from .admission import Admission
from .deadlines import DEADLINE_GRACE_SECONDS, Deadlines, restart_backoff
from .pools import (
    Assign,
    Capacity,
    Container,
    FailInputs,
    InputsTimedOut,
    Instruction,
    Phase,
    Pool,
    PoolConfig,
    RequeueInputs,
    RestartBackoff,
    StartContainer,
    StartupTimedOut,
    StopContainer,
)

__all__ = ["DEADLINE_GRACE_SECONDS", "INPUT_CRASH_LIMIT", "MAX_BLIND_STARTS", "POOL_CRASH_LIMIT", "Assign", "Capacity",
           "Container", "FailInputs", "InputsTimedOut", "Instruction", "Phase", "Pool", "PoolConfig", "RequeueInputs",
           "RestartBackoff", "Scheduler", "StartContainer", "StartupTimedOut", "StopContainer", "restart_backoff"]

# Inputs handed to a container beyond what it can run at once. Only short inputs are prefetched, so
# that a long input never waits behind another while a container sits idle (see `_window`).
PREFETCH_TARGET_SECONDS = 0.002
MAX_PREFETCH = 1024
EWMA_WEIGHT = 0.2
# A new container is only worth starting when the backlog would keep the live ones busy for longer
# than about a cold start; below that, warm containers drain it sooner than a new one could start.
DRAIN_TARGET_SECONDS = 0.5
# Until the first input of a pool has finished, nothing is known about how long inputs take: start
# at most this many containers at once rather than one per queued input.
MAX_BLIND_STARTS = 8
# Above this share of cpu time in their wall time, a pool's inputs count as cpu-bound.
CPU_BOUND_SHARE = 0.5
# Crash policy (see the module's docstring): re-runs of one input after crashes, and crashes in a row
# (no input completing in between) after which an ephemeral pool fails what it has queued.
INPUT_CRASH_LIMIT = 3
POOL_CRASH_LIMIT = 3


class Scheduler(Admission, Deadlines):
    def __init__(self, new_container_id, capacity: Capacity | None = None,
                 gpus: tuple[_gpus.GpuDevice, ...] = ()) -> None:
        self._new_id = new_container_id
        self.capacity = capacity
        self.gpus = tuple(gpus)  # the machine's GPU inventory
        self.pools: dict[str, Pool] = {}
        self.containers: dict[str, Container] = {}

    # --- events ------------------------------------------------------------------------------------
    def add_pool(self, pool_id: str, config: PoolConfig, now: float) -> list[Instruction]:
        self.pools[pool_id] = Pool(pool_id, config)
        return self._reconcile(self.pools[pool_id], now)

    def remove_pool(self, pool_id: str, reason: str) -> list[Instruction]:
        """Stop every container of the pool and fail what is still queued."""
        pool = self.pools.get(pool_id)
        if pool is None:
            return []
        pool.active = False
        out: list[Instruction] = []
        if pool.queue:
            out.append(FailInputs(tuple(pool.queue), reason))
            pool.queue.clear()
        for c in list(pool.containers.values()):
            if c.phase is not Phase.STOPPING:
                c.phase = Phase.STOPPING
                out.append(StopContainer(c.id, reason))
        if not pool.containers:
            del self.pools[pool_id]
        return out

    def retire_pool(self, pool_id: str, now: float) -> list[Instruction]:
        """A redeployed function's old version: it takes no new inputs, finishes what it has, and its
        containers stop as soon as they are idle."""
        pool = self.pools.get(pool_id)
        if pool is None:
            return []
        pool.config = replace(pool.config, min_containers=0, buffer_containers=0, scaledown_window=0.0)
        pool.retired = True
        return self._reconcile(pool, now)

    def submit(self, pool_id: str, inputs: Iterable[int], now: float, front: bool = False,
               callers: bool = False) -> list[Instruction]:
        """Queue `inputs`; `callers`: each has a caller blocked on it (see `Pool.callers`)."""
        pool = self.pools[pool_id]
        why = self.too_big(pool.config)
        if why is not None:
            return [FailInputs(tuple(inputs), f"No container can start: {why}.")]
        if pool.config.unbound:
            return [FailInputs(tuple(inputs), "This class has required parameters and no container can run it "
                                              "without their values: call it with them, e.g. `Cls(name=...)`.")]
        if callers:
            inputs = list(inputs)
            pool.callers.update(inputs)
        if front:
            pool.queue.extendleft(reversed(list(inputs)))
        else:
            pool.queue.extend(inputs)
        return self._reconcile(pool, now)

    def submit_to(self, pool_id: str, cid: str, input_id: int, now: float) -> list[Instruction] | None:
        """Give `input_id` straight to container `cid` of the pool if it is ready and has a free slot
        (session affinity); None when it cannot take it now (then `submit` it as usual)."""
        pool = self.pools.get(pool_id)
        if pool is None:
            return None
        c = pool.containers.get(cid)
        if c is None or c.phase is not Phase.READY or c.leaving or pool.queue:
            return None  # no jumping the queue: queued inputs came first
        if len(c.assigned) >= pool.config.max_inputs:
            return None
        c.assigned[input_id] = None
        c.last_active = now
        self._mark_running(c, pool.config.max_inputs, now)
        return [Assign(c.id, (input_id,))]

    def ready_containers(self, pool_id: str) -> list[str]:
        pool = self.pools.get(pool_id)
        if pool is None:
            return []
        return [c.id for c in pool.containers.values() if c.phase is Phase.READY and not c.leaving]

    def cancel(self, pool_id: str, inputs: set[int]) -> bool:
        """Drop queued inputs; True if all of them were still queued (none assigned)."""
        pool = self.pools.get(pool_id)
        if pool is None:
            return False
        for i in inputs:
            pool.input_crashes.pop(i, None)
        pool.callers.difference_update(inputs)
        before = len(pool.queue)
        pool.queue = deque(i for i in pool.queue if i not in inputs)
        return before - len(pool.queue) == len(inputs)

    def holder_of(self, input_id: int) -> str | None:
        for c in self.containers.values():
            if input_id in c.assigned:
                return c.id
        return None

    def holds(self, cid: str, input_id: int) -> bool:
        """Whether the container still holds the input: it alone may finish it (an output for one it
        does not hold is stale, the input timed out there or went back to the queue, or forged)."""
        c = self.containers.get(cid)
        return c is not None and input_id in c.assigned

    def container_connected(self, cid: str, now: float) -> None:
        """The container's runtime said hello: from now on it imports the user's code and runs the enter
        hooks, within `startup_timeout`."""
        c = self.containers.get(cid)
        if c is not None and c.connected_at is None:
            c.connected_at = now

    def container_ready(self, cid: str, now: float) -> list[Instruction]:
        c = self.containers.get(cid)
        if c is None or c.phase is not Phase.STARTING:
            return []
        c.phase = Phase.READY
        c.last_active = now
        pool = self.pools[c.pool]
        pool.start_failures = 0
        pool.restart_at = 0.0
        return self._reconcile(pool, now)

    def inputs_done(self, cid: str, inputs: Iterable[int], seconds: float, now: float,
                    cpu_seconds: float | None = None) -> list[Instruction]:
        c = self.containers.get(cid)
        if c is None:
            return []
        n = 0
        pool = self.pools[c.pool]
        callers = pool.callers
        for i in inputs:
            if i in c.assigned:
                del c.assigned[i]
                c.running.pop(i, None)
                n += 1
                pool.input_crashes.pop(i, None)
                if callers:
                    callers.discard(i)
        c.served += n
        c.last_active = now
        if n:
            pool.crashes = 0  # inputs complete: the crashes before were not a loop
        self._mark_running(c, pool.config.max_inputs, now)
        if n:
            per_input = seconds / n
            pool.ewma_seconds = (
                per_input
                if pool.ewma_seconds is None
                else (1 - EWMA_WEIGHT) * pool.ewma_seconds + EWMA_WEIGHT * per_input
            )
            if cpu_seconds is not None and seconds > 0:
                share = min(1.0, cpu_seconds / seconds)
                pool.cpu_share = share if pool.cpu_share is None else (1 - EWMA_WEIGHT) * pool.cpu_share + EWMA_WEIGHT * share
        return self._reconcile(pool, now)

    def container_exited(self, cid: str, now: float, reason: str, init_failed: bool = False,
                         crashed: bool = False) -> list[Instruction]:
        """A container is gone: `init_failed` if it reported a start-up failure (an exception in the
        import or an enter hook, a start-up past its deadline), `crashed` if it died unasked without
        reporting one (a signal, the OOM killer, an exit), neither if it was stopped.

        What it held and had not finished runs again, from the front of the queue: inputs it had not
        started simply go back; inputs it was running (a container runs what it holds in order, the
        first `max_inputs`) count one crash each and fail past `INPUT_CRASH_LIMIT` re-runs. After a
        reported start-up failure the queue fails (the next container would fail the same way); after
        crashes it fails only in an ephemeral pool past `POOL_CRASH_LIMIT` crashes in a row. A failure
        at start-up, reported or a crash, backs the pool off before its next start.
        """
        c = self.containers.pop(cid, None)
        if c is None:
            return []
        pool = self.pools[c.pool]
        del pool.containers[cid]
        out: list[Instruction] = []
        held = list(c.assigned)
        cut = 0 if c.leaving else pool.config.max_inputs
        running, waiting = held[:cut], held[cut:]
        if not pool.active:
            if held:
                out.append(FailInputs(tuple(held), reason, lost=bool(running)))
            for i in held:
                pool.input_crashes.pop(i, None)
            if not pool.containers:
                del self.pools[pool.id]
            return out + self._admit_waiting(now)
        # One that was stopping was asked to (or left by itself after timing out an input): no crash.
        crashed = crashed and c.phase is not Phase.STOPPING
        if crashed:
            pool.crashes += 1
        lost, again = [], []
        for i in running:
            k = pool.input_crashes.get(i, 0) + 1
            if k > INPUT_CRASH_LIMIT:
                pool.input_crashes.pop(i, None)
                lost.append(i)
            else:
                pool.input_crashes[i] = k
                again.append(i)
        if lost:
            pool.callers.difference_update(lost)
            out.append(FailInputs(tuple(lost), f"{reason} (it crashed {INPUT_CRASH_LIMIT + 1} containers)", lost=True))
        back = again + waiting
        if back:
            pool.queue.extendleft(reversed(back))
            out.append(RequeueInputs(tuple(back)))
        fail_queue = init_failed or (crashed and pool.config.fail_on_crashes and pool.crashes >= POOL_CRASH_LIMIT)
        if fail_queue and pool.queue:
            if not init_failed:
                reason = f"{reason} ({pool.crashes} containers crashed in a row; pending inputs fail)"
            for i in pool.queue:
                pool.input_crashes.pop(i, None)
            pool.callers.difference_update(pool.queue)
            out.append(FailInputs(tuple(pool.queue), reason))
            pool.queue.clear()
        if (init_failed or (crashed and c.phase is Phase.STARTING)) and not c.start_failed:
            out.append(self._start_failed(pool, cid, now))
        return out + self._reconcile(pool, now) + self._admit_waiting(now, pool.id)

    def release(self, cid: str, inputs: Iterable[int], now: float, leaving: bool = False) -> list[Instruction]:
        """A container hands back inputs it had not started; they go to the front of the queue.

        A `leaving` container (it timed out an input and exits) gets nothing more; inputs that were on
        their way to it when it left are requeued when it exits, since it never started them.
        """
        c = self.containers.get(cid)
        if c is None:
            return []
        if leaving:
            c.leaving = True
            c.phase = Phase.STOPPING
        back = [i for i in inputs if i in c.assigned]
        for i in back:
            del c.assigned[i]
            c.running.pop(i, None)
        pool = self.pools[c.pool]
        pool.queue.extendleft(reversed(back))
        if not leaving:
            self._mark_running(c, pool.config.max_inputs, now)
        return self._reconcile(pool, now)

    def stop_container(self, cid: str, reason: str) -> list[Instruction]:
        c = self.containers.get(cid)
        if c is None or c.phase is Phase.STOPPING:
            return []
        c.phase = Phase.STOPPING
        return [StopContainer(cid, reason)]

    def tick(self, now: float) -> list[Instruction]:
        out: list[Instruction] = []
        for pool in list(self.pools.values()):
            if pool.active:
                out += self._expire(pool, now)
                if pool.callers:
                    self._prune_callers(pool)
                out += self._reconcile(pool, now)
        return out

    @staticmethod
    def _prune_callers(pool: Pool) -> None:
        """Forget caller inputs that left the pool by a way the events above do not see (a safety net:
        the scheduler's own ways out discard them). Only while the pool has no other backlog, so cheap."""
        if len(pool.queue) > len(pool.callers):
            return
        here = set(pool.queue)
        for c in pool.containers.values():
            here.update(c.assigned)
        pool.callers &= here

    # --- decisions ---------------------------------------------------------------------------------
    def plan(self, pool: Pool, held: int | None = None, ready: int | None = None) -> int:
        """How many containers the pool should have now.

        Enough to run every queued and assigned input at `target_inputs` per container, but no more
        than the backlog needs to drain within `DRAIN_TARGET_SECONDS` at the observed time per input
        (so a map of a million 1 µs inputs does not start a container per input), except that inputs
        with a caller blocked on each (`Pool.callers`: 200 threads each calling `.remote()`) count
        in full, each caller's wait being the backlog ahead of it; cpu-bound inputs get no more
        containers than cores either way; plus
        `buffer_containers` while busy, at least `min_containers`, at most `max_containers`.

        `held` (inputs the pool's containers hold) and `ready` (its ready containers) are counted here
        unless the caller counted them already.
        """
        cfg = pool.config
        if cfg.unbound:
            return 0
        per_container = cfg.target_inputs or cfg.max_inputs
        if held is None:
            held = sum(len(c.assigned) for c in pool.containers.values())
        busy = len(pool.queue) + held
        want = math.ceil(busy / per_container)
        if busy and pool.ewma_seconds is not None:
            by_time = math.ceil(busy * pool.ewma_seconds / (DRAIN_TARGET_SECONDS * per_container))
            want = min(want, max(1, by_time))
            if pool.callers:
                want = max(want, math.ceil(min(len(pool.callers), busy) / per_container))
            if self.capacity is not None and pool.cpu_share is not None and pool.cpu_share > CPU_BOUND_SHARE:
                # Inputs that compute rather than wait gain nothing from more containers than cores; and
                # their observed time grows with every extra container competing for the cores, which
                # would otherwise feed back into an ever larger plan.
                want = min(want, max(1, math.floor(self.capacity.cpu)))
        elif busy:
            if ready is None:
                ready = sum(1 for c in pool.containers.values() if c.phase is Phase.READY)
            want = min(want, ready + MAX_BLIND_STARTS)
        if busy:
            want += cfg.buffer_containers
        want = max(want, cfg.min_containers)
        if cfg.max_containers is not None:
            want = min(want, cfg.max_containers)
        if cfg.gpu:  # never more containers than the machine has devices for
            want = min(want, _gpus.max_containers(cfg.gpu, self.gpus))
        return want

    def _window(self, pool: Pool) -> int:
        """Inputs one container may hold: what it runs at once, plus a prefetch for short inputs."""
        cfg = pool.config
        if pool.ewma_seconds is None or not cfg.prefetch:
            return cfg.max_inputs
        prefetch = int(PREFETCH_TARGET_SECONDS / max(pool.ewma_seconds, 1e-7))
        return cfg.max_inputs + min(prefetch, MAX_PREFETCH)

    def _reconcile(self, pool: Pool, now: float, allow_start: bool = True) -> list[Instruction]:
        out: list[Instruction] = []
        # One pass over the pool's containers (a pool may have thousands; this runs on every event):
        # what they hold, the live and ready ones, those with room for more inputs, the idle ones.
        live: list[Container] = []
        open_: list[Container] = []
        idle: list[Container] = []
        ready = held = 0
        window = self._window(pool) if pool.queue else 0
        for c in pool.containers.values():
            n = len(c.assigned)
            held += n
            if c.phase is not Phase.STOPPING:
                live.append(c)
                if c.phase is Phase.READY:
                    ready += 1
                    if n < window:
                        open_.append(c)
                    if not n:
                        idle.append(c)
        # Assign queued inputs to ready containers, spreading the backlog evenly between them.
        if open_:
            # Only containers with room take inputs; sorted by what they hold they come first, so the
            # share of each is still the backlog over the ready containers from it on.
            open_.sort(key=lambda c: len(c.assigned))
            for k, c in enumerate(open_):
                room = window - len(c.assigned)
                if room <= 0 or not pool.queue:
                    continue
                share = math.ceil(len(pool.queue) / (ready - k))
                take = min(room, share)
                batch = tuple(pool.queue.popleft() for _ in range(take))
                c.assigned.update(dict.fromkeys(batch))
                c.last_active = now
                self._mark_running(c, pool.config.max_inputs, now)
                out.append(Assign(c.id, batch))
        # Scale: start what the plan lacks, stop idle containers past the scale-down window.
        want = self.plan(pool, held, ready)
        pool.pending = 0
        pool.waiting_for_gpu = 0
        if now < pool.restart_at:
            allow_start = False  # backing off after start-up failures
        if allow_start and len(live) < want and self.too_big(pool.config) is None:
            new: list[Container] = []
            for k in range(want - len(live)):
                if not self._fits(pool.config):
                    pool.pending = want - len(live) - k
                    out += self._make_room(pool)
                    break
                devices: tuple[str, ...] = ()
                if pool.config.gpu:
                    picked = _gpus.choose(pool.config.gpu, self.gpus, self.gpus_busy())
                    if picked is None:  # every matching device is held: wait for one to be free
                        pool.pending = pool.waiting_for_gpu = want - len(live) - k
                        out += self._make_room_gpu(pool)
                        break
                    devices = picked
                cid = self._new_id()
                c = Container(cid, pool.id, Phase.STARTING, now, now, gpus=devices)
                pool.containers[cid] = c
                self.containers[cid] = c
                why = f"plan {want} > {len(live)} live ({len(pool.queue)} queued)"
                if pool.start_failures:
                    why += f"; restart after {pool.start_failures} start-up failure(s) in a row"
                pool.restart_at = 0.0  # the wait is over; the next failure sets it again
                out.append(StartContainer(pool.id, cid, why, gpus=devices))
                new.append(c)
            live += new
        if pool.retired and not pool.queue and not pool.containers:
            del self.pools[pool.id]
            return out
        excess = len(live) - max(want, pool.config.min_containers)
        if excess > 0:
            idle = sorted((c for c in idle if not c.assigned), key=lambda c: c.last_active)  # still idle
            for c in idle:
                if excess <= 0:
                    break
                idle_for = now - c.last_active
                if idle_for >= pool.config.scaledown_window:
                    c.phase = Phase.STOPPING
                    excess -= 1
                    out.append(StopContainer(c.id, f"idle {idle_for:.1f}s >= scaledown_window"))
        return out

    @staticmethod
    def _mark_running(c: Container, max_inputs: int, now: float) -> None:
        # `running` is a prefix of `assigned` (both keep insertion order and lose entries only), so the
        # next inputs to count as running are the ones right after it.
        n = min(max_inputs, len(c.assigned)) - len(c.running)
        if n > 0:
            for iid in itertools.islice(c.assigned, len(c.running), len(c.running) + n):
                c.running[iid] = now
