"""Public module path `modal.app` (Modal programs import from here)."""

from ._app import App, Stub

__all__ = ["App", "Stub"]
