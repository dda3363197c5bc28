"""Framed msgpack messages over asyncio transports, shared by the control plane and the SDK.

A `asyncio.Protocol` rather than streams: frames are parsed in `data_received` and handed to a
callback synchronously, which saves a task switch per message on the hot path (measured: streams
cost ~150 µs per round trip on the default loop, a protocol under uvloop well under half that).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from . import _protocol as P

log = logging.getLogger("homeport.wire")


class FramedProtocol(asyncio.Protocol):
    """Calls `on_message(message)` for each frame and `on_close(exc)` once when the peer goes away.

    A frame whose header announces more than `max_frame` bytes is refused before anything is read
    into memory for it: `on_oversize(length)` is called (it may send a last message) and the
    connection is closed; nothing after it is read.

    `decode` turns a frame's body into a message: by default plain data; a peer that knows what it
    receives passes one of `homeport._protocol`'s typed decoders.
    """

    on_oversize: Callable[[int], None] | None = None

    def __init__(
        self,
        on_message: Callable[[Any], None],
        on_close: Callable[[Exception | None], None] | None = None,
        decode: Callable[[bytes], Any] = P.decode,
    ) -> None:
        self._on_message = on_message
        self._on_close = on_close
        self.decode = decode  # may change with what the peer turns out to be (after its hello)
        self._frames = P.FrameReader()
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self._paused = False
        self._refused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        # While this connection's own frames are handled (`data_received`), what is sent on it is held
        # here and written once at the end, in order: a burst of requests (pipelined spawns) gets its
        # answers in one write, not one system call each. Nothing waits: the end is in the same turn.
        self._held: list[bytes] | None = None

    # --- asyncio.Protocol --------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    @property
    def max_frame(self) -> int:
        """The largest frame accepted: no limit (all a header can say) unless set (the control plane)."""
        return self._frames.max_frame

    @max_frame.setter
    def max_frame(self, n: int) -> None:
        self._frames.max_frame = n

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        frames = self._frames
        frames.feed(data)
        on_message = self._on_message
        held: list[bytes] = []
        self._held = held
        try:
            while True:
                try:
                    body = frames.next()
                except P.FrameTooLarge as exc:
                    self._refuse_frame(exc.size)
                    return
                if body is None:
                    return
                try:
                    message = self.decode(body)
                except P.MalformedMessage as exc:
                    self.on_malformed(body, exc)
                    continue
                on_message(message)
        finally:
            if self._held is held:
                self._release()

    def _release(self) -> None:
        """Write what was held while frames were handled (see `_held`)."""
        held, self._held = self._held, None
        if held and self.transport is not None and not self.transport.is_closing():
            self.transport.write(held[0] if len(held) == 1 else b"".join(held))

    def on_malformed(self, body: bytes, exc: P.MalformedMessage) -> None:
        """A frame that `decode` refused: dropped, with a warning (the control plane answers it)."""
        log.warning("dropped a message that does not decode: %s", exc)

    @property
    def _buf(self) -> P.FrameReader:  # what is buffered, not yet a whole frame (for tests)
        return self._frames

    def _refuse_frame(self, n: int) -> None:
        self._refused = True
        self._frames.clear()
        if self.on_oversize is not None:
            self.on_oversize(n)
        self._release()
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._held = None
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

    def send(self, message: Any) -> None:
        """Send a message: a typed message of `homeport._protocol` or a plain map."""
        held = self._held
        if held is not None:
            held.append(P.encode(message))
        elif self.transport is not None and not self.transport.is_closing():
            self.transport.write(P.encode(message))

    async def drain(self) -> None:
        """Wait until the peer has taken what we wrote (flow control for big maps)."""
        if self._paused and not self.is_closing:
            w = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(w)
            await w

    def close(self) -> None:
        self._release()
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
