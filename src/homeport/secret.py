"""Public module path `modal.secret` (Modal programs import from here)."""

from ._secret import Secret

__all__ = ["Secret"]
