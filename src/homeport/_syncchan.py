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
import weakref
from typing import Any

from . import _address, _config
from . import _protocol as P
from ._liveness import gave_up, say_answers_again, say_silent
from .exception import AuthError, ConnectionError, error_from_code

_local = threading.local()
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
            raise ConnectionError(f"Could not connect to the Homeport control plane at {self.address}: {exc}") from None
        self._buf = bytearray()  # bytes read off the socket, not yet a whole frame
        _open.add(self)
        from ._client import hello_message

        reply = self._request({**hello_message(_config.read_token() or ""), "id": 0})
        if not reply.get("ok"):
            self.close()
            raise AuthError(f"{reply.get('msg')}. The token in {_config.token_path()} does not match the running "
                            "control plane's.")

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

    def _recv(self) -> dict[str, Any]:
        """The next frame. Waits for the socket with `select`, so that a control plane that stopped
        answering is noticed (`_quiet`) rather than waited on silently; a frame already buffered costs
        no system call."""
        buf = self._buf
        size = P.HEADER.size
        while len(buf) < size:
            self._read_some(buf)
        (n,) = P.HEADER.unpack_from(buf)
        if len(buf) < size + n and n > 1 << 20:  # a big frame: read it into place, not chunk by chunk
            body = bytearray(n)
            got = len(buf) - size
            body[:got] = buf[size:]
            buf.clear()
            view = memoryview(body)
            while got < n:
                self._wait()
                k = self.sock.recv_into(view[got:])
                if not k:
                    raise EOFError
                got += k
            return P.decode(bytes(body))
        while len(buf) < size + n:
            self._read_some(buf)
        frame = bytes(buf[size : size + n])
        del buf[: size + n]
        return P.decode(frame)

    def _read_some(self, buf: bytearray) -> None:
        self._wait()
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise EOFError
        buf += chunk

    def _wait(self) -> None:
        """Until the socket has data. Every quiet HEARTBEAT_SECONDS the control plane is pinged (it
        answers PONG at once when it runs); silent for SILENCE_WARN_SECONDS, the caller is told on
        stderr and the wait goes on, or ends with ConnectionError past HOMEPORT_CONTROL_PLANE_TIMEOUT."""
        if select.select([self.sock], [], [], P.HEARTBEAT_SECONDS)[0]:
            return
        import time

        limit = float(os.environ.get(P.ENV_CONTROL_PLANE_TIMEOUT) or 0) or None
        since = time.monotonic() - P.HEARTBEAT_SECONDS
        warned = False
        while True:
            silent = time.monotonic() - since
            if silent >= P.SILENCE_WARN_SECONDS and not warned:
                warned = True
                say_silent(self.address, limit)
            if limit is not None and silent >= limit:
                raise gave_up(self.address, silent, limit)
            self.sock.sendall(P.encode({"t": P.PING}))
            if select.select([self.sock], [], [], P.HEARTBEAT_SECONDS)[0]:
                if warned:
                    say_answers_again()
                return

    def _request(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.sock.sendall(P.encode(msg))
        while True:
            reply = self._recv()
            if reply.get("t") == P.RESULT and reply.get("id") == msg["id"]:
                return reply

    def spawn(self, fid: str, call_id: str, data: bytes, method: str | None) -> None:
        """Start a spawned call (the control plane accepted it when this returns)."""
        self._ids += 1
        msg = {"t": P.CALL, "call": call_id, "fid": fid, "kind": P.KIND_SPAWN, "inputs": [[0, data, method]],
               "id": self._ids}
        try:
            reply = self._request(msg)
        except (OSError, EOFError):
            self.close()
            raise ConnectionError("The connection to the Homeport control plane was lost during a spawn.") from None
        except ConnectionError:
            self.close()
            raise
        if not reply.get("ok"):
            raise error_from_code(reply.get("code", ""), reply.get("msg", ""))

    def call(self, fid: str, call_id: str, data: bytes, method: str | None) -> tuple[int, Any]:
        """One unary call: (status, data) of its output."""
        try:
            self.sock.sendall(P.encode({"t": P.CALL, "call": call_id, "fid": fid, "kind": P.KIND_UNARY,
                                        "inputs": [[0, data, method]]}))
            while True:
                msg = self._recv()
                if msg.get("t") == P.OUTPUTS and msg.get("call") == call_id:
                    _, status, out = msg["items"][0]
                    return status, out
                if msg.get("t") == P.RESULT and not msg.get("ok"):
                    raise error_from_code(msg.get("code", ""), msg.get("msg", ""))
        except KeyboardInterrupt:
            from . import _bridge

            if _bridge.interrupt_cancels:  # not under `run --detach`: the call goes on there
                try:
                    self.sock.sendall(P.encode({"t": P.CALL_CANCEL, "call": call_id, "id": 0}))
                except OSError:
                    self.close()
            raise
        except (OSError, EOFError):
            self.close()
            raise ConnectionError("The connection to the Homeport control plane was lost during a call.") from None
        except ConnectionError:  # it stopped answering (HOMEPORT_CONTROL_PLANE_TIMEOUT)
            self.close()
            raise
