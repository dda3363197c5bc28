"""Public module path `modal.dict` (Modal programs import from here)."""

from ._dict import Dict
from ._stored_object import ObjectInfo as DictInfo

__all__ = ["Dict", "DictInfo"]
