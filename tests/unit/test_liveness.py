"""Liveness: a peer that stopped answering is pinged, reported after SILENCE_WARN_SECONDS, and (for the
client, when asked) given up on. Sockets and fakes only; the intervals are shrunk by monkeypatching."""

import socket
import threading
import time
from types import SimpleNamespace

import pytest

from homeport import _protocol as P
from homeport._syncchan import SyncChannel
from homeport.exception import ConnectionError
from homeport.server.liveness import check_containers


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(P, "HEARTBEAT_SECONDS", 0.05)
    monkeypatch.setattr(P, "SILENCE_WARN_SECONDS", 0.3)


def _channel():
    ours, theirs = socket.socketpair()
    ch = SyncChannel.__new__(SyncChannel)
    ch.sock, ch._frames, ch.address, ch.pid = ours, P.FrameReader(), "/test.sock", 0
    return ch, theirs


def _frames(sock) -> list[dict]:
    sock.setblocking(False)
    data = b""
    try:
        while chunk := sock.recv(1 << 16):
            data += chunk
    except BlockingIOError:
        pass
    out = []
    while data:
        (n,) = P.HEADER.unpack_from(data)
        out.append(P.decode(data[P.HEADER.size:P.HEADER.size + n]))
        data = data[P.HEADER.size + n:]
    return out


def test_a_silent_control_plane_is_pinged_reported_and_given_up_on_when_a_timeout_is_set(fast, monkeypatch, capsys):
    monkeypatch.setenv(P.ENV_CONTROL_PLANE_TIMEOUT, "0.6")
    ch, plane = _channel()
    with pytest.raises(ConnectionError, match="has not answered for"):
        ch._recv()
    assert "has not answered for 0.3 s (is it stopped?); giving up after 0.6 s" in capsys.readouterr().err
    pings = _frames(plane)
    assert pings and all(f == {"t": P.PING} for f in pings)
    ch.close()
    plane.close()


def test_a_control_plane_that_answers_again_is_waited_for(fast, monkeypatch, capsys):
    monkeypatch.delenv(P.ENV_CONTROL_PLANE_TIMEOUT, raising=False)
    ch, plane = _channel()

    def resume():
        time.sleep(0.5)
        plane.sendall(P.encode({"t": P.OUTPUTS, "call": "fc-1", "items": [[0, P.SUCCESS, 1]]}))

    t = threading.Thread(target=resume)
    t.start()
    assert type(ch._recv()) is P.Outputs
    t.join()
    err = capsys.readouterr().err
    assert "still waiting" in err and "the control plane answers again" in err
    ch.close()
    plane.close()


def test_a_buffered_frame_needs_no_wait(fast):
    ch, plane = _channel()
    plane.sendall(P.encode(P.Ping()) + P.encode(P.Pong()))
    assert ch._recv() == P.Ping()
    plane.close()  # nothing more will come: the second frame is already here
    assert ch._recv() == P.Pong()
    with pytest.raises(EOFError):
        ch._recv()
    ch.close()


def test_a_big_frame_is_read_whole(fast):
    ch, plane = _channel()
    big = P.GenItems(call="fc-1", items=[b"x" * (3 << 20)])
    t = threading.Thread(target=plane.sendall, args=(P.encode(big),))
    t.start()
    assert ch._recv() == big
    t.join()
    ch.close()
    plane.close()


class _Proto:
    def __init__(self):
        self.sent = []

    def send(self, msg):
        self.sent.append(msg)


def test_the_control_plane_pings_quiet_ready_containers_and_reports_silent_ones_once(fast):
    published = []
    rec = SimpleNamespace(container_id="ta-1", fn=SimpleNamespace(tag="f"), proto=_Proto(), ready_at=1.0,
                          state="ready", last_heard=100.0, silent_since=None)
    starting = SimpleNamespace(container_id="ta-2", fn=SimpleNamespace(tag="f"), proto=_Proto(), ready_at=None,
                               state="starting", last_heard=0.0, silent_since=None)
    cp = SimpleNamespace(containers={"ta-1": rec, "ta-2": starting},
                         supervisor=SimpleNamespace(publish=lambda r, text: published.append(text)))
    check_containers(cp.containers, cp.supervisor, 100.01)
    assert rec.proto.sent == [] and not published  # heard from lately: no ping
    check_containers(cp.containers, cp.supervisor, 100.1)
    assert rec.proto.sent == [P.Ping()] and not published
    check_containers(cp.containers, cp.supervisor, 100.5)
    check_containers(cp.containers, cp.supervisor, 100.6)
    assert [p for p in published if "has not answered the control plane for 0.3 s" in p] == [published[0]]
    assert len(published) == 1
    assert starting.proto.sent == []  # a starting container reads nothing yet: not pinged, not blamed
    rec.last_heard = 100.65  # it answered
    check_containers(cp.containers, cp.supervisor, 100.66)
    assert "answers the control plane again" in published[-1] and rec.silent_since is None
