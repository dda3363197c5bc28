"""Schedules for `@app.function(schedule=...)`: `Period` (every N units) and `Cron` (a cron expression)."""

from __future__ import annotations

from typing import Any

from .exception import InvalidError

__all__ = ["Cron", "Period", "Schedule", "schedule_from_dict"]

_PERIOD_FIELDS = ("years", "months", "weeks", "days", "hours", "minutes", "seconds")
_CRON_FIELDS = "minute hour day-of-month month day-of-week"


class Period:
    """Run a function every fixed period, measured from when the app was deployed.

    Calendar units keep wall-clock meaning: `days=1` runs at the same time every day.

    ```python
    @app.function(schedule=modal.Period(hours=6))
    def refresh():
        ...
    ```
    """

    __slots__ = _PERIOD_FIELDS

    def __init__(
        self,
        *,
        years: int = 0,
        months: int = 0,
        weeks: int = 0,
        days: int = 0,
        hours: int = 0,
        minutes: int = 0,
        seconds: float = 0,
    ) -> None:
        values = {
            "years": years,
            "months": months,
            "weeks": weeks,
            "days": days,
            "hours": hours,
            "minutes": minutes,
            "seconds": seconds,
        }
        for name, value in values.items():
            allowed: tuple[type, ...] = (int, float) if name == "seconds" else (int,)
            if isinstance(value, bool) or not isinstance(value, allowed):
                kind = "a number" if name == "seconds" else "an int"
                raise InvalidError(f"Period `{name}` must be {kind}, not {type(value).__name__}: {value!r}")
            if value < 0:
                raise InvalidError(f"Period `{name}` must be non-negative, got {value}")
        if not any(values.values()):
            raise InvalidError("Period must be positive: set at least one unit, e.g. `Period(hours=1)`")
        for name, value in values.items():
            setattr(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "period", **{name: getattr(self, name) for name in _PERIOD_FIELDS}}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Period):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(tuple(self.to_dict().items()))

    def __repr__(self) -> str:
        parts = [f"{name}={getattr(self, name)!r}" for name in _PERIOD_FIELDS if getattr(self, name)]
        return f"Period({', '.join(parts)})"


class Cron:
    """Run a function on a cron schedule, in `timezone` (an IANA name; UTC by default).

    ```python
    @app.function(schedule=modal.Cron("0 9 * * 1-5", timezone="Europe/Paris"))
    def weekday_report():
        ...
    ```
    """

    __slots__ = ("cron_string", "timezone")

    def __init__(self, cron_string: str, timezone: str = "UTC") -> None:
        if not isinstance(cron_string, str):
            raise InvalidError(f'Cron expects a string like "0 9 * * *", not {type(cron_string).__name__}')
        fields = cron_string.split()
        # A sixth field is accepted for the seconds or year extensions some cron dialects use.
        if len(fields) not in (5, 6):
            raise InvalidError(
                f"Invalid cron string {cron_string!r}: expected 5 space-separated fields "
                f"({_CRON_FIELDS}), got {len(fields)}. "
                'For example, Cron("0 9 * * 1") runs at 09:00 every Monday.'
            )
        if not isinstance(timezone, str) or not timezone.strip():
            raise InvalidError(f"Cron `timezone` must be an IANA time zone name like 'UTC', got {timezone!r}")
        self.cron_string = " ".join(fields)
        self.timezone = timezone

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "cron", "cron_string": self.cron_string, "timezone": self.timezone}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Cron):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.cron_string, self.timezone))

    def __repr__(self) -> str:
        if self.timezone == "UTC":
            return f"Cron({self.cron_string!r})"
        return f"Cron({self.cron_string!r}, timezone={self.timezone!r})"


Schedule = Period | Cron


def schedule_from_dict(data: dict[str, Any]) -> Schedule:
    """Rebuild a schedule from `Period.to_dict()` or `Cron.to_dict()`."""
    kind = data.get("kind")
    if kind == "period":
        return Period(**{name: data.get(name, 0) for name in _PERIOD_FIELDS})
    if kind == "cron":
        return Cron(data["cron_string"], data.get("timezone", "UTC"))
    raise InvalidError(f"Unknown schedule kind {kind!r}: expected 'period' or 'cron'")
