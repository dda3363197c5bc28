"""The one frame reader: bytes in, whole frames out; no I/O (the caller reads its socket).

Every message is framed by a 4-byte big-endian length. The asyncio protocol (`homeport._wire`), the
SDK's blocking channel (`homeport._syncchan`) and the container runtime all cut frames with it.
"""

from __future__ import annotations

import struct

HEADER = struct.Struct("!I")
_HEADER_SIZE = HEADER.size
_unpack = HEADER.unpack_from


class FrameTooLarge(Exception):
    """A header announced more than the reader's `max_frame` bytes: nothing of it was buffered."""

    def __init__(self, size: int) -> None:
        super().__init__(f"a frame of {size} bytes")
        self.size = size


class FrameReader:
    __slots__ = ("_buf", "max_frame")

    def __init__(self, max_frame: int = 0xFFFFFFFF) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data

    def next(self) -> bytes | None:
        """The body of the next whole frame, or None until more bytes are fed. Raises FrameTooLarge
        (and drops what it holds) for a frame over `max_frame`."""
        buf = self._buf
        if len(buf) < _HEADER_SIZE:
            return None
        (n,) = _unpack(buf)
        if n > self.max_frame:
            self._buf = bytearray()
            raise FrameTooLarge(n)
        end = _HEADER_SIZE + n
        if len(buf) < end:
            return None
        body = bytes(buf[_HEADER_SIZE:end])
        del buf[:end]
        return body

    def missing(self) -> int:
        """How many more bytes the next frame needs at least (a header's worth when it is not known)."""
        buf = self._buf
        if len(buf) < _HEADER_SIZE:
            return _HEADER_SIZE - len(buf)
        (n,) = _unpack(buf)
        return max(0, _HEADER_SIZE + n - len(buf))

    def clear(self) -> None:
        self._buf = bytearray()

    def __len__(self) -> int:
        return len(self._buf)
