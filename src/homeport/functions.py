"""Public module path `modal.functions` (Modal programs import from here)."""

from ._function import Function
from ._function_call import FunctionCall

__all__ = ["Function", "FunctionCall"]
