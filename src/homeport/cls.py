"""Public module path `modal.cls` (Modal programs import from here)."""

from ._cls import Cls, Obj, parameter

__all__ = ["Cls", "Obj", "parameter"]
