"""A blocking connection per thread for `f.remote(...)` called from synchronous code.

The general client runs on a background event loop, so a blocking call would cross two threads for
every message (about 0.1 ms on a small machine, a third of a warm call). A unary call needs none of
that: this channel writes the call and reads frames until its output arrives, on the calling thread.
Logs, generators, maps and `.aio` still go through the event-loop client.

`.spawn()` from synchronous code is pipelined here: it writes the call (its id is allocated by the
client, so `FunctionCall.object_id` is usable at once) and returns without waiting for the control
plane's acceptance; acceptances are read as they come, in batches. What that means:

- The first spawn of a function on a thread's connection still waits for its acceptance, so a call
  to a function that is not running (its app stopped) fails at `spawn()`, as before.
- A later spawn that the control plane refuses (the app stopped in between) raises its error at that
  call's `.get()` / `.cancel()` (each time), and at the thread's next `.spawn()` of the same function,
  which then sends nothing ("an earlier spawn ... was refused: ..."), once for all its refusals.
- At most `SPAWN_WINDOW` spawns are unacknowledged per connection: past that a spawn waits.
- `.get()`, `.cancel()` and `FunctionCall.from_id(...)` in the same process wait for the call's
  acceptance first, so they never race it; another process may use the id once `spawn()`'s caller
  has had any answer about it (e.g. after `call.get(timeout=0)`).
- A process that exits (or a thread's connection that closes) waits for its spawns' acceptances
  first, up to `EXIT_WAIT_SECONDS`, so fire-and-forget spawns of a deployed app are committed; a
  refusal nobody was told of is printed to stderr.
"""

from __future__ import annotations

import atexit
import os
import select
import socket
import sys
import threading
import time
import weakref
from typing import Any

from . import _address, _config
from . import _protocol as P
from ._liveness import SilenceWatch
from ._session import connection_lost, could_not_connect, hello_message, hello_refused
from .exception import ConnectionError, Error, error_from_code

SPAWN_WINDOW = 4096  # spawns written and not acknowledged yet, per connection
DRAIN_EVERY = 256  # spawns between two looks (without waiting) for acknowledgements that arrived
EXIT_WAIT_SECONDS = 30.0  # how long a closing connection waits for its spawns' acknowledgements

_local = threading.local()
_PING = P.encode(P.Ping())
_open: weakref.WeakSet[SyncChannel] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for ch in list(_open):
        ch.close()


class SpawnAck:
    """A spawn written to the control plane whose acceptance may not have been read yet."""

    __slots__ = ("call_id", "channel", "done", "error", "fid", "reported", "rid")

    def __init__(self, channel: SyncChannel, rid: int, call_id: str, fid: str) -> None:
        self.channel, self.rid, self.call_id, self.fid = channel, rid, call_id, fid
        self.done = False
        self.error: Error | None = None  # the refusal (or the lost connection), once `done`
        self.reported = False  # its error was raised to the caller

    def wait(self) -> None:
        """Until the control plane answered; raises its refusal (each time: `.get()` may be retried)."""
        if not self.done:
            self.channel._wait_ack(self)
        if self.error is not None:
            self.reported = True
            raise self.error


# Call id -> its spawn, while unacknowledged: `FunctionCall.from_id(id)` in this process waits for it too.
_unacked: dict[str, SpawnAck] = {}


def unacknowledged(call_id: str) -> SpawnAck | None:
    return _unacked.get(call_id)


class SyncChannel:
    def __init__(self) -> None:
        self.address = _config.client_address()
        self.pid = os.getpid()
        # Spawns by request id whose acknowledgement was not read yet; refused ones not yet raised;
        # functions with an accepted spawn on this connection (their next spawns are pipelined).
        self._acks: dict[int, SpawnAck] = {}
        self._refused: list[SpawnAck] = []
        self._accepted: set[str] = set()
        self._since_drain = 0
        # Spawns' request ids count down from -1: never one of the other requests' (Dicts and Queues
        # number theirs from 1 on this connection too).
        self._spawn_ids = 0
        # Reading the socket: this thread, or another whose `FunctionCall.get()` waits for a spawn's
        # acknowledgement (a FunctionCall may travel between threads).
        self._read_lock = threading.Lock()
        try:
            self.sock = _address.connect(self.address)
        except OSError as exc:
            raise could_not_connect(self.address, exc) from None
        self._frames = P.FrameReader()  # bytes read off the socket, not yet a whole frame
        _open.add(self)
        hello = hello_message(_config.read_token() or "")
        hello.id = 0
        reply = self._request(hello)
        if not reply.ok:
            self.close()
            raise hello_refused(reply.msg)

    @classmethod
    def get(cls) -> SyncChannel:
        ch: SyncChannel | None = getattr(_local, "channel", None)
        # (A connection with spawns in flight is not probed: its acknowledgements make it readable,
        # and reading them notices a closed one.)
        if ch is None or ch.pid != os.getpid() or ch.address != _config.client_address() or (not ch._acks and ch._dead()):
            if ch is not None:
                ch.close()
            ch = _local.channel = cls()
        return ch

    def _dead(self) -> bool:
        """Whether the control plane closed this connection (it restarted) while it sat idle."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
            return bool(readable) and not self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except (OSError, ValueError):
            return True

    def __del__(self) -> None:  # a thread that made calls has ended: its connection goes with it
        self.close()

    def close(self) -> None:
        acks = getattr(self, "_acks", None)  # (None: made without `__init__`, or it failed early)
        if acks and self.pid == os.getpid():
            self._settle_before_close()
        try:
            self.sock.close()
        except OSError:
            pass
        if acks:
            self._lost()
        if getattr(_local, "channel", None) is self:
            _local.channel = None

    def _settle_before_close(self) -> None:
        """Wait (bounded) for the acknowledgements of spawns in flight; print refusals nobody heard of."""
        deadline = time.monotonic() + EXIT_WAIT_SECONDS
        try:
            with self._read_lock:
                while self._acks:
                    left = deadline - time.monotonic()
                    if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                        break
                    self._handle(self._recv())
        except (OSError, EOFError, ValueError, ConnectionError):
            pass
        for ack in list(self._acks.values()) + self._refused:
            if not ack.reported:
                what = ack.error if ack.error is not None else "no acknowledgement before the connection closed"
                print(f"homeport: spawned call {ack.call_id} may not run: {what}", file=sys.stderr)
                ack.reported = True
        self._refused.clear()

    def _lost(self) -> None:
        """The connection is gone: spawns still unacknowledged fail with that at their `.get()`."""
        for ack in list(self._acks.values()):
            self._settle(ack, connection_lost("a spawn"))
        self._acks.clear()

    def _settle(self, ack: SpawnAck, error: Error | None) -> None:
        ack.done, ack.error = True, error
        _unacked.pop(ack.call_id, None)
        if error is not None:
            if not ack.reported:
                self._refused.append(ack)
            self._accepted.discard(ack.fid)
        else:
            self._accepted.add(ack.fid)

    def _handle(self, msg: P.ToClient) -> None:
        """A message read while spawns are in flight: their acknowledgements, nothing else expected."""
        if isinstance(msg, P.Result):
            ack = self._acks.pop(msg.id, None) if type(msg.id) is int else None
            if ack is not None:
                self._settle(ack, None if msg.ok else error_from_code(msg.code or "", msg.msg or ""))

    def _wait_ack(self, ack: SpawnAck | None) -> None:
        """Read until `ack` (None: every spawn in flight) is answered or the connection is lost."""
        with self._read_lock:
            try:
                while self._acks if ack is None else not ack.done:
                    self._handle(self._recv())
            except (OSError, EOFError):
                self.sock.close()
                self._lost()
            except ConnectionError:  # it stopped answering (HOMEPORT_CONTROL_PLANE_TIMEOUT)
                self.sock.close()
                self._lost()

    def _drain_ready(self) -> None:
        """Read the acknowledgements that have arrived, without waiting (the read lock held)."""
        frames = self._frames
        while True:
            try:
                chunk = self.sock.recv(1 << 16, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            if not chunk:
                raise EOFError
            frames.feed(chunk)
        while self._acks:
            body = frames.next()
            if body is None:
                return
            self._handle(P.decode_to_client(body))

    def _raise_refused(self, fid: str) -> None:
        """An earlier spawn of function `fid` on this connection was refused and its caller was not told
        yet: raise it (once for all of them, and for those of its spawns still in flight)."""
        refused = [a for a in self._refused if a.fid == fid and not a.reported]
        self._refused = [a for a in self._refused if a.fid != fid and not a.reported]
        if not refused:
            return
        for a in refused:
            a.reported = True
        for a in self._acks.values():  # in flight: their refusal would be the same news
            if a.fid == fid:
                a.reported = True
        first = refused[0]
        more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        err = first.error
        assert err is not None  # refused ones have their error
        raise type(err)(f"an earlier spawn ({first.call_id}){more} was refused, so this one was not sent: {err}")

    def _recv(self) -> P.ToClient:
        """The next message. Waits for the socket with `select`, so that a control plane that stopped
        answering is noticed (`_wait`) rather than waited on silently; a frame already buffered costs
        no system call. A big frame is read in one piece, not 64 KiB at a time."""
        frames = self._frames
        while True:
            body = frames.next()
            if body is not None:
                return P.decode_to_client(body)
            self._wait()
            chunk = self.sock.recv(max(1 << 16, frames.missing()))
            if not chunk:
                raise EOFError
            frames.feed(chunk)

    def _wait(self) -> None:
        """Until the socket has data. Every quiet HEARTBEAT_SECONDS the control plane is pinged (it
        answers PONG at once when it runs); silent for SILENCE_WARN_SECONDS, the caller is told on
        stderr and the wait goes on, or ends with ConnectionError past HOMEPORT_CONTROL_PLANE_TIMEOUT."""
        if select.select([self.sock], [], [], P.HEARTBEAT_SECONDS)[0]:
            return
        watch = SilenceWatch(self.address)
        since = time.monotonic() - P.HEARTBEAT_SECONDS
        while True:
            watch.check(time.monotonic() - since)  # past the limit: raises
            self.sock.sendall(_PING)
            if select.select([self.sock], [], [], P.HEARTBEAT_SECONDS)[0]:
                watch.heard()
                return

    def _request(self, msg: P.Request | dict[str, Any]) -> P.Result:
        """Send a request (its id set) and read until its result. Spawns in flight are answered first:
        their acknowledgements must not be taken for (or dropped by) another request's reading."""
        if self._acks:
            self._wait_ack(None)
        self.sock.sendall(P.encode(msg))
        rid = msg["id"] if type(msg) is dict else msg.id  # type: ignore[union-attr]
        while True:
            reply = self._recv()
            if isinstance(reply, P.Result) and reply.id == rid:
                return reply

    def spawn(self, fid: str, call_id: str, data: bytes, method: str | None) -> SpawnAck:
        """Write a spawned call; its acceptance is read later (see the module's docstring)."""
        with self._read_lock:
            if self._refused:
                self._raise_refused(fid)
            try:
                self._spawn_ids -= 1
                ack = SpawnAck(self, self._spawn_ids, call_id, fid)
                self.sock.sendall(P.encode(P.Call(call=call_id, fid=fid, kind=P.KIND_SPAWN,
                                                  inputs=[P.CallInput(0, data, method)], id=ack.rid)))
                self._acks[ack.rid] = ack
                _unacked[call_id] = ack
                if fid not in self._accepted:  # the first of this function here: its answer now
                    while not ack.done:
                        self._handle(self._recv())
                elif len(self._acks) >= SPAWN_WINDOW:
                    while len(self._acks) > SPAWN_WINDOW // 2:
                        self._handle(self._recv())
                else:
                    self._since_drain += 1
                    if self._since_drain >= DRAIN_EVERY:
                        self._since_drain = 0
                        self._drain_ready()
            except (OSError, EOFError):
                self._lost()
                lost: Error | None = connection_lost("a spawn")
            except ConnectionError as exc:  # it stopped answering (HOMEPORT_CONTROL_PLANE_TIMEOUT)
                self._lost()
                lost = exc
            else:
                lost = None
        if lost is not None:
            self.close()
            raise lost from None
        if ack.error is not None:  # its own answer came while it waited (the first spawn of a function)
            for a in [ack, *self._refused]:
                if a.fid == fid:
                    a.reported = True
            self._refused = [a for a in self._refused if not a.reported]
            raise ack.error
        return ack

    def call(self, fid: str, call_id: str, data: bytes, method: str | None) -> tuple[int, Any]:
        """One unary call: (status, data) of its output."""
        if self._acks:  # spawns in flight: their acknowledgements first (a `.get()` elsewhere waits on them)
            self._wait_ack(None)
        try:
            self.sock.sendall(P.encode(P.Call(call=call_id, fid=fid, kind=P.KIND_UNARY,
                                              inputs=[P.CallInput(0, data, method)])))
            while True:
                msg = self._recv()
                if isinstance(msg, P.Outputs) and msg.call == call_id:
                    out = msg.items[0]
                    return out.status, out.data
                if isinstance(msg, P.Result) and not msg.ok:
                    raise error_from_code(msg.code or "", msg.msg or "")
        except KeyboardInterrupt:
            from . import _bridge

            if _bridge.interrupt_cancels:  # not under `run --detach`: the call goes on there
                try:
                    self.sock.sendall(P.encode(P.CallCancel(call=call_id, id=0)))
                except OSError:
                    self.close()
            raise
        except (OSError, EOFError):
            self.close()
            raise connection_lost("a call") from None
        except ConnectionError:  # it stopped answering (HOMEPORT_CONTROL_PLANE_TIMEOUT)
            self.close()
            raise
