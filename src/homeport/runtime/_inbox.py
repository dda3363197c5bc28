"""Where the one-at-a-time loop's inputs come from: the container's socket, read by the main thread
itself while it waits for work, so a warm call goes from the socket to the user's function without a
hop through another thread (about 10 µs and a thread wake-up each, on a small machine).

While an input runs, nobody reads unless it runs longer than `GUARD_SECONDS`: then a guard thread
takes the socket for as long as the main thread is busy. It answers pings, passes a cancellation of
the running input on at once (SIGUSR1, as before) and queues inputs that arrive in the inbox; once the
main thread is idle again it hands the socket back. The guard polls every `GUARD_SECONDS` while the
container is busy and sleeps on an event once it has been idle for `GUARD_IDLE_SECONDS`, so an idle
container costs nothing and a busy one's main thread never wakes it per input.
"""

from __future__ import annotations

import _thread
import queue
import select
import signal
import socket
import threading
import time
from typing import Protocol

from .. import _protocol as P

GUARD_SECONDS = 0.01
GUARD_IDLE_SECONDS = 1.0
_PONG = P.Pong()


def start_soon(*threads: threading.Thread) -> None:
    """Start `threads` from a thread of their own, without waiting: `Thread.start()` waits until the new
    thread has run, 1-3 ms for two in a freshly forked container on a busy machine (more under load), on
    its way from ready to its first input. Each waits for its socket, lock or condition anyway."""
    _thread.start_new_thread(_start_all, (threads,))


def _start_all(threads: tuple[threading.Thread, ...]) -> None:
    for t in threads:
        t.start()


class Conn(Protocol):
    """The container's connection (`_runtime.Connection`)."""

    sock: socket.socket

    def send(self, message: P.Message) -> None: ...

    def recv(self) -> P.ToContainer | None: ...

    def buffered(self) -> P.ToContainer | None: ...


class Host(Protocol):
    """What reading for the loop needs of the container (`_runtime.Runtime`)."""

    inbox: queue.SimpleQueue
    cancelled: set[int]
    current: int | None
    _main_thread: threading.Thread

    @property
    def conn(self) -> Conn: ...

    def _watchdog(self) -> None: ...


class SocketInbox:
    def __init__(self, rt: Host) -> None:
        self.rt = rt
        self.conn = rt.conn
        self.inbox = rt.inbox  # what the guard read for the main thread (None: the connection ended)
        self.lock = threading.Lock()  # held by whoever reads the socket
        self.running_since: float | None = None  # the main thread runs an input since then
        self._busy = threading.Event()  # the guard sleeps on it once the container was idle a while
        self._busy.set()
        self.closed = False  # the connection ended: the guard leaves

    def start(self, *more: threading.Thread) -> None:
        """Its watchdog and guard threads start soon (`start_soon`), and `more` with them."""
        start_soon(threading.Thread(target=self.rt._watchdog, name="homeport-watchdog", daemon=True),
                   threading.Thread(target=self._guard, name="homeport-reader", daemon=True), *more)

    # --- the main thread ---------------------------------------------------------------------------
    def running(self) -> None:
        """An input starts (the main thread): the guard reads the socket if it runs long."""
        self.running_since = time.monotonic()
        if not self._busy.is_set():
            self._busy.set()

    def idle(self) -> None:
        self.running_since = None

    def next_inputs(self) -> list[P.InputRow] | None:
        """The next inputs to run (None: the connection ended). Read here, or handed over by the guard
        while it holds the socket."""
        inbox = self.inbox
        while True:
            try:
                items = inbox.get_nowait()
            except queue.Empty:
                pass
            else:
                if items is None or items:
                    return items
                continue
            if self.lock.acquire(blocking=False):
                try:
                    return self._read()
                finally:
                    self.lock.release()
            items = inbox.get()  # the guard reads: it queues what comes, and a wake-up when it lets go
            if items is None or items:
                return items

    def _read(self) -> list[P.InputRow] | None:
        conn = self.conn
        try:
            while True:
                msg = conn.recv()
                if msg is None:
                    self._ended()
                    return None
                items = self.take(msg)
                if items:
                    # Whatever else already arrived whole goes with them (no system call): one batch.
                    while (more := conn.buffered()) is not None:
                        extra = self.take(more)
                        if extra:
                            items = list(items) + list(extra)
                    return items
        except OSError:
            self._ended()
            return None

    def _ended(self) -> None:
        self.closed = True
        self._busy.set()

    # --- either thread, the socket held ------------------------------------------------------------
    def take(self, msg: P.ToContainer) -> list[P.InputRow] | None:
        """Act on a message from the control plane; the inputs it brings, if any."""
        if type(msg) is P.Inputs:
            return msg.items
        if type(msg) is P.Ping:  # liveness
            self.conn.send(_PONG)
        elif type(msg) is P.Cancel:
            rt = self.rt
            ids = set(msg.ids)
            rt.cancelled |= ids  # the loop drops those it holds before running them
            if rt.current in ids:
                assert rt._main_thread.ident is not None  # the main thread is running
                signal.pthread_kill(rt._main_thread.ident, signal.SIGUSR1)
        return None

    # --- the guard thread --------------------------------------------------------------------------
    def _guard(self) -> None:
        idle_since = time.monotonic()
        while not self.closed:
            since = self.running_since
            now = time.monotonic()
            if since is None:
                if now - idle_since >= GUARD_IDLE_SECONDS:
                    self._busy.clear()
                    if self.running_since is None:  # (checked again: `running` may have just missed the clear)
                        self._busy.wait()
                    idle_since = time.monotonic()
                    continue
                time.sleep(GUARD_SECONDS)
                continue
            idle_since = now
            if now - since < GUARD_SECONDS or not self.lock.acquire(blocking=False):
                time.sleep(GUARD_SECONDS)
                continue
            try:
                if not self._read_while_busy():
                    return
            finally:
                self.lock.release()
                self.inbox.put(())  # the main thread may wait for the guard to let go (`next_inputs`)

    def _read_while_busy(self) -> bool:
        """Read for the main thread while it runs inputs; False once the connection ended."""
        conn = self.conn
        try:
            while self.running_since is not None:
                msg = conn.buffered()
                if msg is None:
                    if not select.select([conn.sock], [], [], GUARD_SECONDS)[0]:
                        continue
                    msg = conn.recv()
                    if msg is None:
                        self.inbox.put(None)
                        return False
                items = self.take(msg)
                if items:
                    self.inbox.put(items)
        except (OSError, ValueError):
            self.inbox.put(None)
            return False
        return True
