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

from . import _config
from . import _protocol as P
from .exception import AuthError, ConnectionError, error_from_code

_local = threading.local()
_open: weakref.WeakSet[SyncChannel] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for ch in list(_open):
        ch.close()


class SyncChannel:
    def __init__(self) -> None:
        self.address = str(_config.server_address())
        self.pid = os.getpid()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.connect(self.address)
        except OSError as exc:
            self.sock.close()
            raise ConnectionError(f"Could not connect to the Homeport control plane at {self.address}: {exc}") from None
        self._rfile = self.sock.makefile("rb", buffering=1 << 16)
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
        if ch is None or ch.pid != os.getpid() or ch.address != str(_config.server_address()) or ch._dead():
            if ch is not None:
                ch.close()
            ch = _local.channel = cls()
        return ch

    def _dead(self) -> bool:
        """Whether the control plane closed this connection (it restarted) while it sat idle."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
            return bool(readable) and not self._rfile.peek(1)
        except (OSError, ValueError):
            return True

    def __del__(self) -> None:  # a thread that made calls has ended: its connection goes with it
        self.close()

    def close(self) -> None:
        try:
            self._rfile.close()
            self.sock.close()
        except OSError:
            pass
        if getattr(_local, "channel", None) is self:
            _local.channel = None

    def _recv(self) -> dict[str, Any]:
        header = self._rfile.read(P.HEADER.size)
        if len(header) < P.HEADER.size:
            raise EOFError
        (n,) = P.HEADER.unpack(header)
        body = self._rfile.read(n)
        if len(body) < n:
            raise EOFError
        return P.decode(body)

    def _request(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.sock.sendall(P.encode(msg))
        while True:
            reply = self._recv()
            if reply.get("t") == P.RESULT and reply.get("id") == msg["id"]:
                return reply

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
