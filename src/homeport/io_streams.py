"""`modal.io_streams`: the streams of a sandbox and of its execs.

A `StreamReader` yields output as it arrives: chunks as read inside the container (`bufsize=-1`, the
default) or whole lines (`bufsize=1`), as `str` (`text=True`, the default) or `bytes`. Iterate it, with
`for` or `async for`, or `read()` everything until the process closes it. A `StreamWriter` buffers
what you `write()` until `drain()` sends it; `write_eof()` closes the stream once drained.
"""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from ._bridge import MethodWithAio, run_async, run_sync
from .exception import InvalidError

__all__ = ["StreamReader", "StreamWriter"]


class StreamReader:
    """Output of a sandbox or an exec. `source()` (a coroutine on the bridge loop) returns the next chunk
    of bytes, or None at the end."""

    def __init__(self, source: Callable[[], Awaitable[bytes | None]] | None, text: bool = True,
                 by_line: bool = False) -> None:
        self._source = source  # None: the stream was not piped (DEVNULL, or merged into stdout)
        self._text = text
        self._by_line = by_line
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace") if text else None
        self._pending: Any = "" if text else b""
        self._eof = False
        self.read = MethodWithAio(self._read, "read")

    async def _next_raw(self) -> bytes | None:
        if self._source is None or self._eof:
            return None
        data = await self._source()
        if data is None:
            self._eof = True
        return data

    async def _next(self) -> Any:
        """The next item (chunk or line), or None at the end."""
        while True:
            if self._by_line:
                nl = self._pending.find("\n" if self._text else b"\n")
                if nl >= 0:
                    line, self._pending = self._pending[: nl + 1], self._pending[nl + 1 :]
                    return line
            data = await self._next_raw()
            if data is None:
                tail = self._decoder.decode(b"", final=True) if self._decoder is not None else b""
                item, self._pending = self._pending + tail, ("" if self._text else b"")
                return item or None
            piece = self._decoder.decode(data) if self._decoder is not None else data
            if not self._by_line:
                item, self._pending = self._pending + piece, ("" if self._text else b"")
                if item:
                    return item
                continue
            self._pending += piece

    async def _read(self) -> Any:
        parts = []
        while (item := await self._next()) is not None:
            parts.append(item)
        return ("" if self._text else b"").join(parts)

    def __iter__(self) -> Iterator[Any]:
        while (item := run_sync(self._next())) is not None:
            yield item

    async def _aiter(self) -> AsyncIterator[Any]:
        while (item := await run_async(self._next())) is not None:
            yield item

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._aiter()


class StreamWriter:
    """Input of a sandbox or an exec: `write()` buffers, `drain()` sends, `write_eof()` closes."""

    def __init__(self, send: Callable[[bytes, bool], Awaitable[None]]) -> None:
        self._send = send
        self._buffer = bytearray()
        self._eof = False
        self._closed = False
        self.drain = MethodWithAio(self._drain, "drain")

    def write(self, data: bytes | bytearray | memoryview | str) -> None:
        if self._eof or self._closed:
            raise ValueError("Stdin is closed. Cannot write to it.")
        if isinstance(data, str):
            data = data.encode("utf-8")
        elif not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, not {type(data).__name__}")
        self._buffer += data

    def write_eof(self) -> None:
        """Close the stream once what is buffered has been sent (by the next `drain()`)."""
        self._eof = True

    async def _drain(self) -> None:
        if self._closed:
            if self._buffer:
                raise InvalidError("Stdin is closed. Cannot write to it.")
            return
        data, self._buffer = bytes(self._buffer), bytearray()
        if data or self._eof:
            await self._send(data, self._eof)
        if self._eof:
            self._closed = True
