"""Framed msgpack messages over asyncio transports, shared by the control plane and the SDK.

A `asyncio.Protocol` rather than streams: frames are parsed in `data_received` and handed to a
callback synchronously, which saves a task switch per message on the hot path (measured: streams
cost ~150 µs per round trip on the default loop, a protocol under uvloop well under half that).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from . import _protocol as P

_HEADER_SIZE = P.HEADER.size
_unpack_header = P.HEADER.unpack_from


class FramedProtocol(asyncio.Protocol):
    """Calls `on_message(message)` for each frame and `on_close(exc)` once when the peer goes away.

    A frame whose header announces more than `max_frame` bytes is refused before anything is read
    into memory for it: `on_oversize(length)` is called (it may send a last message) and the
    connection is closed; nothing after it is read.
    """

    max_frame = 0xFFFFFFFF  # no limit (all a header can say); the control plane sets its own
    on_oversize: Callable[[int], None] | None = None

    def __init__(
        self,
        on_message: Callable[[dict[str, Any]], None],
        on_close: Callable[[Exception | None], None] | None = None,
    ) -> None:
        self._on_message = on_message
        self._on_close = on_close
        self._buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self._paused = False
        self._refused = False
        self._drain_waiters: list[asyncio.Future[None]] = []

    # --- asyncio.Protocol --------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        buf = self._buf
        buf += data
        pos = 0
        end = len(buf)
        while end - pos >= _HEADER_SIZE:
            (n,) = _unpack_header(buf, pos)
            if n > self.max_frame:
                self._refuse_frame(n)
                return
            if end - pos - _HEADER_SIZE < n:
                break
            start = pos + _HEADER_SIZE
            message = P.decode(bytes(buf[start : start + n]))
            pos = start + n
            self._on_message(message)
        if pos:
            del buf[:pos]

    def _refuse_frame(self, n: int) -> None:
        self._refused = True
        self._buf = bytearray()
        if self.on_oversize is not None:
            self.on_oversize(n)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        for w in self._drain_waiters:
            if not w.done():
                w.set_result(None)
        if self._on_close is not None:
            self._on_close(exc)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        for w in self._drain_waiters:
            if not w.done():
                w.set_result(None)
        self._drain_waiters.clear()

    # --- sending -----------------------------------------------------------------------------------
    @property
    def is_closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def send(self, message: dict[str, Any]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(P.encode(message))

    async def drain(self) -> None:
        """Wait until the peer has taken what we wrote (flow control for big maps)."""
        if self._paused and not self.is_closing:
            w = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(w)
            await w

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where installed: it halves the cost of every hop (see DESIGN.md, floors)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


# --- byte relays (tunnels, a web_server's port, a sandbox's ports) ---------------------------------
Connect = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, chunk: int = 1 << 16) -> None:
    """Copy `reader` to `writer` until EOF, then pass the EOF on; a peer that went away ends it."""
    try:
        while data := await reader.read(chunk):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connect: Connect,
                chunk: int = 1 << 16) -> None:
    """Connect upstream and copy both ways until both sides are done; a client whose upstream cannot
    be reached is closed."""
    try:
        up_reader, up_writer = await connect()
    except OSError:
        writer.close()
        return
    try:
        await asyncio.gather(pipe(reader, up_writer, chunk), pipe(up_reader, writer, chunk))
    finally:
        for w in (writer, up_writer):
            w.close()
