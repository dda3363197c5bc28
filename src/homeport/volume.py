"""Public module path `modal.volume` (Modal programs import from here)."""

from ._volume import Volume

__all__ = ["Volume"]
