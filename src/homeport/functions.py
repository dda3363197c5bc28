"""Public module path `modal.functions` (Modal programs import from here)."""

from ._function import Function, FunctionCall

__all__ = ["Function", "FunctionCall"]
