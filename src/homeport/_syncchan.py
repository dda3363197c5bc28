"""A blocking connection per thread for `f.remote(...)` called from synchronous code.

The general client runs on a background event loop, so a blocking call would cross two threads for
every message (about 0.1 ms on a small machine, a third of a warm call). A unary call needs none of
that: this channel writes the call and reads frames until its output arrives, on the calling thread.
Logs, generators, maps and `.aio` still go through the event-loop client.
"""

from __future__ import annotations

import atexit
import os
import select
import socket
import threading
import time
import weakref
from typing import Any

from . import _address, _config
from . import _protocol as P
from ._liveness import SilenceWatch
from ._session import connection_lost, could_not_connect, hello_message, hello_refused
from .exception import ConnectionError, error_from_code

_local = threading.local()
_PING = P.encode(P.Ping())
_open: weakref.WeakSet[SyncChannel] = weakref.WeakSet()
# (environment that names the control plane, its address): `_config.client_address()` resolves paths
# (system calls), too slow to run on every call.
_cached_address: tuple[tuple, str] = ((), "")


def _server_address() -> str:
    global _cached_address
    env = os.environ
    key = (env.get(P.ENV_SERVER_ADDRESS), env.get(P.ENV_STATE_DIR), env.get("XDG_STATE_HOME"), env.get("HOME"))
    cached = _cached_address
    if cached[0] != key:
        cached = _cached_address = (key, _config.client_address())
    return cached[1]


@atexit.register
def _close_all() -> None:
    for ch in list(_open):
        ch.close()


class SyncChannel:
    def __init__(self) -> None:
        self.address = _server_address()
        self.pid = os.getpid()
        self._ids = 0  # request ids of this channel's requests
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
        if ch is None or ch.pid != os.getpid() or ch.address != _server_address() or ch._dead():
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
        try:
            self.sock.close()
        except OSError:
            pass
        if getattr(_local, "channel", None) is self:
            _local.channel = None

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
        """Send a request (its id set) and read until its result."""
        self.sock.sendall(P.encode(msg))
        rid = msg["id"] if type(msg) is dict else msg.id  # type: ignore[union-attr]
        while True:
            reply = self._recv()
            if isinstance(reply, P.Result) and reply.id == rid:
                return reply

    def spawn(self, fid: str, call_id: str, data: bytes, method: str | None) -> None:
        """Start a spawned call (the control plane accepted it when this returns)."""
        self._ids += 1
        msg = P.Call(call=call_id, fid=fid, kind=P.KIND_SPAWN, inputs=[P.CallInput(0, data, method)], id=self._ids)
        try:
            reply = self._request(msg)
        except (OSError, EOFError):
            self.close()
            raise connection_lost("a spawn") from None
        except ConnectionError:
            self.close()
            raise
        if not reply.ok:
            raise error_from_code(reply.code or "", reply.msg or "")

    def call(self, fid: str, call_id: str, data: bytes, method: str | None) -> tuple[int, Any]:
        """One unary call: (status, data) of its output."""
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
