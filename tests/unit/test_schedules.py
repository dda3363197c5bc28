"""Schedule arithmetic: pure, with explicit times."""

from datetime import datetime, timezone

import pytest

from homeport import Cron, Period
from homeport.server.core.schedules import next_fire, plan


def ts(*args, tz=timezone.utc) -> float:
    return datetime(*args, tzinfo=tz).timestamp()


T0 = ts(2026, 1, 31, 12, 0, 0)


@pytest.mark.parametrize(
    ("period", "after", "expected"),
    [
        (Period(seconds=1), T0, T0 + 1),
        (Period(seconds=1), T0 + 0.5, T0 + 1),
        (Period(seconds=1), T0 + 1, T0 + 2),  # strictly after
        (Period(hours=6), T0 + 7 * 3600, T0 + 12 * 3600),
        (Period(minutes=1, seconds=30), T0, T0 + 90),
        (Period(days=1), T0 + 10, ts(2026, 2, 1, 12)),
        (Period(months=1), T0, ts(2026, 2, 28, 12)),  # Jan 31 + 1 month: the last day of February
        (Period(months=1), ts(2026, 2, 28, 12), ts(2026, 3, 31, 12)),  # counted from the anchor, not drifting
        (Period(years=1), T0, ts(2027, 1, 31, 12)),
    ],
)
def test_period(period, after, expected):
    assert next_fire(period.to_dict(), T0, after) == pytest.approx(expected)


def test_cron_in_utc_and_in_a_time_zone():
    every_6h = Cron("0 */6 * * *").to_dict()
    assert next_fire(every_6h, T0, T0) == ts(2026, 1, 31, 18)
    paris_9am = Cron("0 9 * * *", timezone="Europe/Paris").to_dict()
    assert next_fire(paris_9am, T0, T0) == ts(2026, 2, 1, 8)  # 09:00 in Paris is 08:00 UTC in winter


def test_a_missed_tick_runs_once_on_recovery():
    s = Period(minutes=1).to_dict()
    # last ran at T0+60; the control plane was down for ten minutes
    p = plan(s, T0, last_fired=T0 + 60, now=T0 + 660 + 5)
    assert p.run_now is True
    assert p.next_at == T0 + 720  # then back on the regular grid, not ten catch-up runs


def test_nothing_missed_means_wait_for_the_next_tick():
    s = Period(minutes=1).to_dict()
    p = plan(s, T0, last_fired=T0 + 60, now=T0 + 90)
    assert p == type(p)(False, T0 + 120)
    first = plan(s, T0, last_fired=None, now=T0 + 1)
    assert first.run_now is False and first.next_at == T0 + 60
