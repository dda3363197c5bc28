"""Public module path `modal.retries` (Modal programs import from here)."""

from ._retries import Retries

__all__ = ["Retries"]
