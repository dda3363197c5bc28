"""Public module path `modal.schedule` (Modal programs import from here)."""

from ._schedule import Cron, Period

__all__ = ["Cron", "Period"]
