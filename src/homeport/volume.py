"""Public module path `modal.volume` (Modal programs import from here)."""

from ._volume import FileEntry, FileEntryType, Volume

__all__ = ["FileEntry", "FileEntryType", "Volume"]
