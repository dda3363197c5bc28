"""Timers that run scheduled functions (`schedule=modal.Period(...)` / `modal.Cron(...)`).

When to fire is decided by the pure `core.schedules`; this module only arms timers and records, for
deployed apps, when each schedule last fired, so that a tick missed while the control plane was down
runs once on recovery.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from .core.schedules import next_fire, plan
from .state import State

log = logging.getLogger("homeport.server")


class ScheduleRunner:
    def __init__(self, state: State, fire: Callable[[str, str], None]) -> None:
        self._state = state
        self._fire = fire
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._specs: dict[tuple[str, str], tuple[dict[str, Any], float, bool]] = {}
        self._next: dict[tuple[str, str], float] = {}  # when each schedule fires next (wall clock)

    def start(self, app_id: str, tag: str, schedule: dict[str, Any], anchor: float, durable: bool) -> None:
        key = (app_id, tag)
        self._cancel(key)
        self._specs[key] = (schedule, anchor, durable)
        last = self._state.last_fired(app_id, tag) if durable else None
        p = plan(schedule, anchor, last, time.time())
        if p.run_now:
            log.info("schedule of %s in %s missed a tick while the control plane was down: running it once now", tag, app_id)
            self._run(key)
        self._arm(key, p.next_at)

    def _arm(self, key: tuple[str, str], at: float) -> None:
        loop = asyncio.get_running_loop()
        self._next[key] = at
        self._timers[key] = loop.call_later(max(0.0, at - time.time()), self._tick, key, at)

    def _tick(self, key: tuple[str, str], due: float) -> None:
        if key not in self._specs:
            return
        self._run(key)
        schedule, anchor, _ = self._specs[key]
        self._arm(key, next_fire(schedule, anchor, max(due, time.time())))

    def _run(self, key: tuple[str, str]) -> None:
        app_id, tag = key
        _, _, durable = self._specs[key]
        if durable:
            self._state.set_last_fired(app_id, tag, time.time())
        try:
            self._fire(app_id, tag)
        except Exception:
            log.exception("scheduled run of %s in %s failed to start", tag, app_id)

    def next_runs(self) -> dict[tuple[str, str], float]:
        return dict(self._next)

    def _cancel(self, key: tuple[str, str]) -> None:
        self._next.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def stop_app(self, app_id: str) -> None:
        for key in [k for k in self._specs if k[0] == app_id]:
            self._cancel(key)
            del self._specs[key]

    def close(self) -> None:
        for key in list(self._timers):
            self._cancel(key)
        self._specs.clear()
