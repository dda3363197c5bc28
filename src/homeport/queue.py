"""Public module path `modal.queue` (Modal programs import from here)."""

from ._queue import Queue
from ._stored_object import ObjectInfo as QueueInfo

__all__ = ["Queue", "QueueInfo"]
