"""The container's connection to the control plane, and the watchdog that notices a control plane
that stopped answering."""

from __future__ import annotations

import sys
import threading
import time

from .. import _address
from .. import _protocol as P

_PING = P.Ping()


class Connection:
    def __init__(self, address: str) -> None:
        self.sock = _address.connect(address)  # a Unix socket, or tcp://HOST:PORT on another machine
        self._send_lock = threading.Lock()
        self._frames = P.FrameReader()
        self.last_heard = time.monotonic()  # the control plane's last message (see `Runtime._watchdog`)

    def send(self, message: P.Message) -> None:
        data = P.encode(message)
        with self._send_lock:
            self.sock.sendall(data)

    def recv(self) -> P.ToContainer | None:
        """The control plane's next message; None once the connection is closed. A message that does
        not decode (a control plane of another version) is dropped with a line on stderr."""
        frames = self._frames
        while True:
            body = frames.next()
            if body is None:
                chunk = self.sock.recv(max(1 << 16, frames.missing()))
                if not chunk:
                    return None
                frames.feed(chunk)
                continue
            self.last_heard = time.monotonic()
            try:
                return P.decode_to_container(body)
            except P.MalformedMessage as exc:
                print(f"homeport runtime: dropped a message from the control plane: {exc}", file=sys.stderr)


    def buffered(self) -> P.ToContainer | None:
        """The next message if it has already arrived whole (no system call); else None."""
        while (body := self._frames.next()) is not None:
            try:
                return P.decode_to_container(body)
            except P.MalformedMessage as exc:
                print(f"homeport runtime: dropped a message from the control plane: {exc}", file=sys.stderr)
        return None


def watch_control_plane(conn: Connection, container_id: str) -> None:
    """Notice a control plane that stopped answering (SIGSTOPped, wedged): after a quiet
    HEARTBEAT_SECONDS ping it; once silent for SILENCE_WARN_SECONDS say so on stderr (the container's
    log), and again when it answers. The container keeps what it holds and goes on (a control plane
    that died closes the socket instead, and the reader ends the container)."""
    warned = False
    last = time.monotonic()
    while True:
        time.sleep(P.HEARTBEAT_SECONDS / 2)
        now = time.monotonic()
        if now - last > 2 * P.HEARTBEAT_SECONDS:  # this container did not run (stopped): not the plane's fault
            conn.last_heard = max(conn.last_heard, now - P.HEARTBEAT_SECONDS)
        last = now
        silent = now - conn.last_heard
        try:
            if silent >= P.HEARTBEAT_SECONDS:
                conn.send(_PING)
        except OSError:
            return
        if silent >= P.SILENCE_WARN_SECONDS and not warned:
            warned = True
            print(f"homeport: container {container_id}: the control plane has not answered for "
                  f"{P.SILENCE_WARN_SECONDS:g} s (is it stopped?); waiting for it", file=sys.stderr, flush=True)
        elif warned and silent < P.HEARTBEAT_SECONDS:
            warned = False
            print(f"homeport: container {container_id}: the control plane answers again",
                  file=sys.stderr, flush=True)
