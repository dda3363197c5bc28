"""The pure parts of spare copies: the template's bookkeeping (`runtime._spare`) and the backend's
(`backends.local._spares`); the processes themselves are in tests/integration/test_spares.py."""

import asyncio
import os
import socket

import pytest

from homeport._protocol import templates as T
from homeport.backends.local import _spares
from homeport.backends.local._spares import Spare, SparePool
from homeport.runtime import _spare


def test_only_containers_without_limits_take_a_spare():
    assert _spares.usable_by(None, None)
    assert not _spares.usable_by(100, None)
    assert not _spares.usable_by(None, 0.5)


def test_spares_are_made_only_by_root_and_can_be_turned_off(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert _spares.enabled({})
    assert not _spares.enabled({"HOMEPORT_SPARES": "0"})
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert not _spares.enabled({})


def test_a_template_makes_its_next_spare_after_a_delay_and_hands_each_off_once(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(_spare.time, "monotonic", lambda: clock[0])
    spares = _spare.Spares(enabled=True)
    assert not spares.due() and spares.wait() == pytest.approx(_spare.DELAY)
    clock[0] += _spare.DELAY
    assert spares.due()
    spare = spares.make(lambda: 4242, lambda name, end: None)
    assert spare is not None and spare.pid == 4242 and spares.wait() is None  # one at a time
    other, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    spare.end.close()
    spare.end = other  # stands for the spare's pair
    assert spares.hand_off("not-it", b"x", []) is None and spares.current is spare
    r, w = os.pipe()
    try:
        assert spares.hand_off(spare.name, b"packet", [r]) == 4242
        data, fds, _flags, _addr = socket.recv_fds(theirs, 100, 4)
        assert data == b"packet" and len(fds) == 1
        for fd in fds:
            os.close(fd)
    finally:
        os.close(r)
        os.close(w)
        theirs.close()
    assert spares.current is None and spares.hand_off(spare.name, b"packet", []) is None  # never twice
    assert not spares.due()  # the next one comes DELAY after the hand-off
    clock[0] += _spare.DELAY
    assert spares.due()


def test_a_template_gives_up_on_spares_that_keep_dying(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(_spare.time, "monotonic", lambda: clock[0])
    spares = _spare.Spares(enabled=True)
    for n in range(_spare.GIVE_UP):
        clock[0] += _spare.DELAY
        spare = spares.make(lambda n=n: 100 + n, lambda name, end: None)
        assert spare is not None
        assert spares.reaped(999) is None  # not the spare: a container's exit
        assert spares.reaped(spare.pid) == spare.name
    clock[0] += _spare.DELAY
    assert not spares.wanted() and spares.wait() is None


def test_a_spare_reads_its_container_and_the_idmap_passed_last():
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    template, backend = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fork = T.Fork(cid="ta-1", env={}, held=True, mounts=["/a"], spare="spare-1-1")
    pipes = [os.pipe() for _ in range(3)]
    fds = [r for r, _w in pipes] + [pipes[0][1], pipes[1][1]]  # out, err, one mount, hold, then the idmap
    socket.send_fds(mine, [T.encode_packet(fork)], fds)
    msg, got, idmap = _spare.wait_for_container("spare-1-1", theirs, template, announce=True)
    assert msg == fork and len(got) == 4 and idmap >= 0
    spared = T.decode_from_template(backend.recv(1000))
    assert spared == T.Spared(name="spare-1-1", pid=0)  # its host pid comes with the packet's credentials
    for fd in [*got, idmap, *[x for p in pipes for x in p]]:
        os.close(fd)
    mine.close()
    backend.close()


def test_the_backend_hands_out_only_placed_spares_and_releases_the_rest():
    released: list[object] = []

    class Pool(SparePool):  # the kernel's part left out: placing and releasing are recorded
        async def place(self, pid):
            return None if pid == 2 else f"cgroup-{pid}"

        async def release(self, cgroup):
            released.append(cgroup)

    async def scenario():
        pool = Pool(None, None)
        live = [True]
        spares: dict[str, Spare] = {}
        pool.spared(spares, Spare("s1", 1, None), lambda: live[0])
        assert SparePool.take(spares) is None  # not placed yet
        await pool.close()
        pool.spared(spares, Spare("s2", 2, None), lambda: live[0])  # cannot be placed: never handed out
        await pool.close()
        taken = SparePool.take(spares)
        assert taken is not None and taken.name == "s1" and taken.cgroup == "cgroup-1"
        assert SparePool.take(spares) is None  # one spare, one container
        pool.spared(spares, Spare("s3", 3, None), lambda: live[0])
        live[0] = False  # its template exits while it is placed
        await pool.close()
        assert released == ["cgroup-3"] and "s3" in spares
        pool.all_gone(spares)
        await pool.close()
        assert spares == {}

    asyncio.run(scenario())
