"""Spare copies: a template keeps one copy forked ahead of demand, so a cold start neither forks nor
waits for its cgroup move (the kernel's wait for an RCU grace period, ~8 ms on cgroup v1).

The template forks the spare `DELAY` after the last one was handed off (or it started), between
messages, and says so (`Spared`;
a copy in a PID namespace of the template's own says so itself, so the backend reads its host pid
from the packet's credentials). The backend puts it in a cgroup made for it, off any container's
path. The spare holds nothing of the template's but what a fresh copy holds at fork: it closes the
template's socket and every idmap descriptor, and waits on a socket pair of its own. Until a
container is handed to it, it runs no user code, no isolation, no setsid: only, where its template has
loaded no user code, a rehearsal of a container's import with an app of Homeport's own (`_rehearsal`).

A `Fork` naming the spare (`Fork.spare`, only ever one the backend has placed) is passed to it as it
came, with its descriptors (stdout, stderr, the backend's mounts, the hold pipe), and last the
container's user's idmap namespace where the template made one. The spare then goes on exactly as a
freshly forked copy (`_template._child`): setsid, stdio, environment, isolation with the container's
user, mounts and needed paths, the runtime. A spare serves one container: the template forgets it at
the hand-off and forks the next one when idle again.

A spare dies with its template: when the template's end of the pair closes (it exited, it was
stopped or retired, the backend killed it) the spare's wait ends and it leaves. One that dies unused
is reported under its name (`Exited`), so the backend removes its cgroup; after `GIVE_UP` such deaths
in a row the template makes no more.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from .._protocol import templates as T

DELAY = 0.010  # seconds after a hand-off before the next spare is forked: after most of the container's isolation, in time for back-to-back cold starts
GIVE_UP = 3  # spares that died unused in a row, after which the template makes no more


@dataclass
class Spare:
    name: str
    pid: int  # as the template sees it
    end: socket.socket  # the template's end of the spare's socket pair


class Spares:
    """The template's side: at most one spare at a time."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.current: Spare | None = None
        self.deaths = 0  # spares in a row that died unused
        self._made = 0
        self._due = time.monotonic() + DELAY  # when the next one is forked

    def wanted(self) -> bool:
        return self.enabled and self.current is None and self.deaths < GIVE_UP

    def wait(self) -> float | None:
        """How long the template may wait for a message before it forks the next spare (None: no limit)."""
        return max(0.0, self._due - time.monotonic()) if self.wanted() else None

    def due(self) -> bool:
        return self.wanted() and time.monotonic() >= self._due

    def make(self, fork: Callable[[], int], life: Callable[[str, socket.socket], None]) -> Spare | None:
        """Fork the next spare (None: the fork failed); in the child, `life(name, its end)` runs and
        never returns."""
        self._made += 1
        name = f"spare-{os.getpid()}-{self._made}"
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = fork()
        except OSError:  # (EAGAIN at a process limit...) counted as a spare that died
            mine.close()
            theirs.close()
            self.deaths += 1
            self._due = time.monotonic() + DELAY
            return None
        if pid == 0:  # the spare
            try:
                mine.close()
                life(name, theirs)
            finally:
                os._exit(1)
        theirs.close()
        self.current = Spare(name, pid, mine)
        return self.current

    def hand_off(self, name: str, packet: bytes, fds: list[int]) -> int | None:
        """Give the container of `packet` (a `Fork`) to spare `name`: its pid, or None when that spare
        is not this template's current one (it died) or cannot take it (it is killed then)."""
        spare = self.current
        if spare is None or spare.name != name:
            return None
        self.current = None
        self._due = time.monotonic() + DELAY
        try:
            socket.send_fds(spare.end, [packet], fds)
        except OSError:
            _kill(spare.pid)
            return None
        finally:
            spare.end.close()
        self.deaths = 0
        return spare.pid

    def reaped(self, pid: int) -> str | None:
        """The name of the spare that was process `pid` (it died unused), or None."""
        spare = self.current
        if spare is None or spare.pid != pid:
            return None
        self.current = None
        self._due = time.monotonic() + DELAY
        spare.end.close()
        self.deaths += 1
        return spare.name

    def drop(self) -> None:
        """No more spares: the current one is killed (its death is reaped and reported as usual)."""
        self.enabled = False
        spare = self.current
        if spare is not None:
            _kill(spare.pid)
            with contextlib.suppress(OSError):
                spare.end.close()

    def close_in_copy(self) -> None:
        """In a copy forked without a spare: it must not hold the spare's pair open after the template."""
        if self.current is not None:
            self.current.end.close()


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def wait_for_container(name: str, end: socket.socket, template: socket.socket,
                       announce: bool, rehearse: bool = False) -> tuple[T.Fork, list[int], int]:
    """In the spare: say it exists (`announce`: itself, from its own pid) and wait for its container.
    The `Fork`, its descriptors, and the idmap namespace the template passed last (-1: none). Leaves
    at once when the template is gone. `rehearse`: first rehearse a container's import (`_rehearsal`:
    a template that has loaded no user code)."""
    if announce:  # the backend reads this spare's host pid from the message's credentials (SO_PASSCRED)
        template.send(T.encode_packet(T.Spared(name=name, pid=0)))
    template.close()  # a spare that held the template's socket would hide the template's exit
    if rehearse:  # while the backend places it
        from ._rehearsal import rehearse as run

        run()
    try:
        data, fds, _flags, _addr = socket.recv_fds(end, T.PACKET, T.MAX_FDS + 4)
    except OSError:
        data, fds = b"", []
    end.close()
    if not data:  # its template is gone
        os._exit(0)
    msg = T.decode_to_template(data)
    if type(msg) is not T.Fork:
        os._exit(1)
    expected = 2 + len(msg.mounts) + (1 if msg.held else 0)
    idmap = fds.pop() if len(fds) > expected else -1
    return msg, fds, idmap
