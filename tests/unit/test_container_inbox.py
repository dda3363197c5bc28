"""The one-at-a-time loop's inbox: the waiting thread reads inputs off the socket itself, and while an
input runs long a guard thread answers pings, passes cancellations on at once and keeps what arrives."""

import queue
import signal
import socket
import threading

import pytest

from homeport import _protocol as P
from homeport.runtime._conn import Connection
from homeport.runtime._inbox import GUARD_SECONDS, SocketInbox


class _Host:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.cancelled: set[int] = set()
        self.current: int | None = None
        self._main_thread = threading.main_thread()

    def _watchdog(self) -> None:
        pass


@pytest.fixture
def wire(tmp_path):
    """(the control plane's end of the socket, the container's inbox)"""
    path = str(tmp_path / "cp.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)
    conn = Connection(path)
    plane, _ = listener.accept()
    listener.close()
    plane.settimeout(30)
    feed = SocketInbox(_Host(conn))
    feed.start()
    yield plane, feed
    plane.close()
    feed.next_inputs()  # the end of the connection: the guard leaves too
    conn.sock.close()


def _row(iid: int) -> P.InputRow:
    return P.InputRow(iid, b"", None, "fc-1")


def _read(plane: socket.socket) -> P.Message:
    frames = P.FrameReader()
    while (body := frames.next()) is None:
        frames.feed(plane.recv(1 << 16))
    return P.decode(body)


def test_inputs_that_arrive_together_come_as_one_batch(wire):
    plane, feed = wire
    plane.sendall(P.encode(P.Inputs(items=[_row(1)])) + P.encode(P.Inputs(items=[_row(2), _row(3)])))
    assert [r.iid for r in feed.next_inputs()] == [1, 2, 3]


def test_while_an_input_runs_long_pings_are_answered_and_new_inputs_kept(wire):
    plane, feed = wire
    plane.sendall(P.encode(P.Inputs(items=[_row(1)])))
    assert [r.iid for r in feed.next_inputs()] == [1]
    feed.running()  # input 1 runs (and runs long: nobody else reads the socket meanwhile)
    plane.sendall(P.encode(P.Ping()) + P.encode(P.Inputs(items=[_row(2)])))
    assert _read(plane)["t"] == P.PONG  # the guard answered
    feed.idle()
    assert [r.iid for r in feed.next_inputs()] == [2]
    plane.sendall(P.encode(P.Inputs(items=[_row(3)])))  # and the waiting thread reads again
    assert [r.iid for r in feed.next_inputs()] == [3]


def test_a_cancellation_of_the_running_input_interrupts_it(wire):
    plane, feed = wire
    got = threading.Event()
    old = signal.signal(signal.SIGUSR1, lambda *_: got.set())
    try:
        plane.sendall(P.encode(P.Inputs(items=[_row(1), _row(2)])))
        assert len(feed.next_inputs()) == 2
        feed.rt.current = 1
        feed.running()
        plane.sendall(P.encode(P.Cancel(ids=[1, 2])))
        while not got.wait(GUARD_SECONDS):  # (signal handlers run in this thread between waits)
            pass
        assert feed.rt.cancelled == {1, 2}  # 2, not started, is dropped by the loop
    finally:
        feed.idle()
        signal.signal(signal.SIGUSR1, old)


def test_the_end_of_the_connection_ends_the_inputs(wire):
    plane, feed = wire
    plane.close()
    assert feed.next_inputs() is None
