"""When scheduled functions run: pure functions of the schedule, an anchor and the time.

A `Period` counts from its anchor (when the app was deployed or started): `Period(hours=6)` fires at
anchor + 6 h, + 12 h ... Calendar units (`days`, `months`, `years`) keep their wall-clock meaning. A
`Cron` fires at the times its expression names, in its time zone (parsed by croniter).

A tick missed while the control plane was down runs at most once on recovery (`plan`).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo


def _add_months(t: datetime, months: int) -> datetime:
    month0 = t.month - 1 + months
    year, month = t.year + month0 // 12, month0 % 12 + 1
    day = min(t.day, calendar.monthrange(year, month)[1])
    return t.replace(year=year, month=month, day=day)


def _period_step(t: datetime, s: dict[str, Any], k: int) -> datetime:
    """The anchor `t` plus `k` periods."""
    t = _add_months(t, k * (12 * s.get("years", 0) + s.get("months", 0)))
    return t + k * timedelta(
        weeks=s.get("weeks", 0), days=s.get("days", 0), hours=s.get("hours", 0),
        minutes=s.get("minutes", 0), seconds=s.get("seconds", 0),
    )


def next_fire(schedule: dict[str, Any], anchor: float, after: float) -> float:
    """The first time strictly after `after` at which the schedule fires (Unix seconds)."""
    if schedule["kind"] == "cron":
        from croniter import croniter

        tz = ZoneInfo(schedule.get("timezone") or "UTC")
        start = datetime.fromtimestamp(after, tz)
        return float(croniter(schedule["cron_string"], start).get_next(float))
    base = datetime.fromtimestamp(anchor, timezone.utc)
    fixed = timedelta(weeks=schedule.get("weeks", 0), days=schedule.get("days", 0),
                      hours=schedule.get("hours", 0), minutes=schedule.get("minutes", 0),
                      seconds=schedule.get("seconds", 0)).total_seconds()
    calendar_months = 12 * schedule.get("years", 0) + schedule.get("months", 0)
    if not calendar_months:  # a fixed length: jump straight to the right period
        k = max(1, int((after - anchor) // fixed) + 1) if after >= anchor else 1
        t = anchor + k * fixed
        while t <= after:
            k += 1
            t = anchor + k * fixed
        return t
    k = 1
    while (t := _period_step(base, schedule, k).timestamp()) <= after:
        k += 1
    return t


@dataclass(frozen=True)
class Plan:
    run_now: bool  # a tick was missed (or is due): run once now
    next_at: float  # then the next regular tick


def plan(schedule: dict[str, Any], anchor: float, last_fired: float | None, now: float) -> Plan:
    """What to do on (re)start: a tick that fell due since `last_fired` runs once, not once per miss."""
    since = last_fired if last_fired is not None else anchor
    due = next_fire(schedule, anchor, since)
    if due <= now:
        return Plan(True, next_fire(schedule, anchor, now))
    return Plan(False, due)
