"""Deadlines, part of the scheduler (`core.scheduler.Scheduler` inherits it).

Deadlines are data: the scheduler knows since when each input has been running and since when each
container has been starting, and `tick` answers with `InputsTimedOut` / `StartupTimedOut` once one
runs past its limit (plus a grace: the container's own timer should fire first). A pool whose
containers fail during start-up restarts with an exponential backoff (`RestartBackoff`).
`next_deadline` tells the ticker when a tick may next have something to do.
"""

from __future__ import annotations

import math

from ..._backoff import exponential_delay
from .pools import (
    Container,
    InputsTimedOut,
    Instruction,
    Phase,
    Pool,
    RequeueInputs,
    RestartBackoff,
    StartupTimedOut,
)

# The control plane's deadline for an input (or a start-up) is the container's own limit plus this.
# The container's timer fires first when user code lets it; the backstop is for code that does not
# (a long call into C, a `try: ... except BaseException: pass` loop).
DEADLINE_GRACE_SECONDS = 1.5
# After a container fails during start-up, the pool starts no other for 1 s, then 2 s, 4 s ... at most
# 60 s; a container that gets ready resets it. Without it a broken `min_containers` pool restarts
# on every tick, forever.
RESTART_BACKOFF_INITIAL = 1.0
RESTART_BACKOFF_FACTOR = 2.0
RESTART_BACKOFF_MAX = 60.0


def restart_backoff(failures: int) -> float:
    """Seconds a pool waits before its next start after `failures` start-up failures in a row."""
    return exponential_delay(failures, RESTART_BACKOFF_INITIAL, RESTART_BACKOFF_FACTOR, RESTART_BACKOFF_MAX)


class Deadlines:
    pools: dict[str, Pool]
    containers: dict[str, Container]

    def restart_clock(self, cid: str, input_id: int, now: float) -> None:
        """Input `input_id` (a map's chunk of inputs, run one after another) reported some of its inputs:
        its deadline counts from now, so that each input of the chunk has the whole `timeout`, and the
        crashes it was running in so far count no more (the input that crashed them is done)."""
        c = self.containers.get(cid)
        if c is not None and input_id in c.running:
            c.running[input_id] = now
            self.pools[c.pool].input_crashes.pop(input_id, None)  # it got on: not a poison one

    @staticmethod
    def _start_failed(pool: Pool, cid: str, now: float) -> RestartBackoff:
        pool.start_failures += 1
        delay = restart_backoff(pool.start_failures)
        pool.restart_at = max(pool.restart_at, now + delay)
        return RestartBackoff(pool.id, cid, pool.start_failures, delay)

    def _expire(self, pool: Pool, now: float) -> list[Instruction]:
        """Containers past a deadline: one not ready `startup_timeout` after its hello, one with an input
        running longer than `timeout`. Both are killed (the service does it) and replaced."""
        cfg = pool.config
        out: list[Instruction] = []
        if (cfg.startup_timeout is None and cfg.timeout is None) or now < pool.expire_after:
            return out
        # While scanning, note the earliest deadline: no tick before it needs to scan again. An input
        # that starts (or a container that connects) later gets a deadline no earlier than now plus
        # its limit, so that bounds what is not here yet.
        start_limit = math.inf if cfg.startup_timeout is None else cfg.startup_timeout + DEADLINE_GRACE_SECONDS
        run_limit = math.inf if cfg.timeout is None else cfg.timeout + cfg.batch_wait + DEADLINE_GRACE_SECONDS
        earliest = now + min(start_limit, run_limit) - 1e-6  # (a hair early: never past a deadline by rounding)
        for c in list(pool.containers.values()):
            if c.phase is Phase.STARTING:
                if cfg.startup_timeout is None or c.connected_at is None:
                    continue
                due = c.connected_at + cfg.startup_timeout + DEADLINE_GRACE_SECONDS
                if now < due:
                    earliest = min(earliest, due)
                else:
                    c.phase = Phase.STOPPING
                    c.start_failed = True  # back off now, not when it exits: no replacement meanwhile
                    out.append(StartupTimedOut(c.id, cfg.startup_timeout))
                    out.append(self._start_failed(pool, c.id, now))
            elif c.phase is Phase.READY and c.running and cfg.timeout is not None:
                limit = cfg.timeout + cfg.batch_wait + DEADLINE_GRACE_SECONDS
                first = min(c.running.values()) + limit
                if now < first:
                    earliest = min(earliest, first)
                    continue
                late = tuple(i for i, since in c.running.items() if now >= since + limit)
                if not late:
                    continue
                c.phase = Phase.STOPPING
                timed_out = set(late)
                pool.callers.difference_update(timed_out)
                rest = [i for i in c.assigned if i not in timed_out]
                c.assigned.clear()
                c.running.clear()
                out.append(InputsTimedOut(c.id, late, cfg.timeout))
                if rest:
                    # Other inputs it was running or held run again elsewhere: at least once, not lost.
                    pool.queue.extendleft(reversed(rest))
                    out.append(RequeueInputs(tuple(rest)))
        pool.expire_after = earliest
        return out

    def next_deadline(self) -> float | None:
        """The earliest time at which `tick` may have something to do: stop an idle container, start one
        after a restart backoff, or kill one past its start-up or input deadline."""
        best = math.inf
        ready, stopping = Phase.READY, Phase.STOPPING
        for pool in self.pools.values():
            cfg = pool.config
            if pool.restart_at and (pool.queue or cfg.min_containers):
                best = min(best, pool.restart_at)
            # One pass per pool (it may have thousands of containers), its invariants out of the loop;
            # the sums as `_expire` makes them, so that a tick at the deadline finds it passed.
            run_limit = None if cfg.timeout is None else cfg.timeout + cfg.batch_wait + DEADLINE_GRACE_SECONDS
            startup = cfg.startup_timeout
            live = 0
            idle_since = math.inf  # the longest idle ready container's last activity
            earliest_run = math.inf  # the earliest start of an input still running
            for c in pool.containers.values():
                phase = c.phase
                if phase is stopping:
                    continue
                live += 1
                if phase is ready:
                    if not c.assigned:
                        if c.last_active < idle_since:
                            idle_since = c.last_active
                    elif run_limit is not None and c.running:
                        running = c.running
                        # `running` gains entries as time passes: its first is its earliest but for a
                        # clock that went back, so `min` only where it holds several
                        since = min(running.values()) if len(running) > 1 else next(iter(running.values()))
                        if since < earliest_run:
                            earliest_run = since
                elif startup is not None and c.connected_at is not None:
                    due = c.connected_at + startup + DEADLINE_GRACE_SECONDS  # as `_expire` adds it
                    if due < best:
                        best = due
            if run_limit is not None and earliest_run + run_limit < best:
                best = earliest_run + run_limit
            if idle_since < math.inf and live > cfg.min_containers:  # else kept warm: no scale-down to wake for
                best = min(best, idle_since + cfg.scaledown_window)
        return None if best == math.inf else best
