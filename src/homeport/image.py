"""Public module path `modal.image` (Modal programs import from here)."""

from ._image import Image

__all__ = ["Image"]
