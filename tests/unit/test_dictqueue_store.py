"""The control plane's Dict and Queue store: limits, TTLs with an injected clock, partitions, waiters."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from homeport._protocol import MalformedMessage
from homeport._protocol import dictqueue as D
from homeport.exception import (
    AlreadyExistsError,
    InvalidError,
    NotFoundError,
    RequestSizeError,
    ResourceExhaustedError,
)
from homeport.server.dictqueue import DictQueueStore, check_partition, check_put
from homeport.server.dictqueue import limits as dq


def _dict_op(store, op, fields):
    """A Dict operation as the control plane takes it: the map checked as the type its "op" names."""
    return store.dict_op(D.check_operation("dict", {"op": op, **fields}))


def _queue_op(store, op, fields, connection_open):
    return store.queue_op(D.check_operation("queue", {"op": op, **fields}), connection_open)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Owner:
    """Stands for a connection (its identity owns ephemeral objects)."""


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(clock):
    db = sqlite3.connect(":memory:", isolation_level=None)
    return DictQueueStore(db, clock)


def _dict(store, name="d"):
    return store.lookup("dict", name, create_if_missing=True)["object_id"]


def _queue(store, name="q"):
    return store.lookup("queue", name, create_if_missing=True)["object_id"]


# --- names and objects ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a/b", "../etc", "", "x" * 65, "ap-" + "a" * 22, "a b", "é", None])
def test_invalid_names_are_refused(store, name):
    with pytest.raises(InvalidError, match="Invalid Dict name"):
        store.lookup("dict", name, create_if_missing=True)


def test_dot_names_are_just_names(store):
    """Modal's rule allows `.` and `..`; here a name is only a column value, never a path."""
    ids = {n: store.create("dict", n)["object_id"] for n in (".", "..", "...")}
    assert len(set(ids.values())) == 3
    assert {m["name"] for m in store.list("dict")} == {".", "..", "..."}


def test_lookup_create_list_delete(store):
    with pytest.raises(NotFoundError):
        store.lookup("queue", "jobs")
    meta = store.create("queue", "jobs")
    assert meta["object_id"].startswith("qu-") and len(meta["object_id"]) == 25
    with pytest.raises(AlreadyExistsError):
        store.create("queue", "jobs")
    assert store.create("queue", "jobs", allow_existing=True)["object_id"] == meta["object_id"]
    # A Dict and a Queue may share a name.
    assert store.create("dict", "jobs")["object_id"].startswith("di-")
    assert [m["name"] for m in store.list("queue")] == ["jobs"]
    store.delete("queue", meta["object_id"])
    assert store.list("queue") == []
    with pytest.raises(NotFoundError):
        store.by_id("queue", meta["object_id"])
    # A dict id is not a queue id.
    with pytest.raises(NotFoundError):
        store.by_id("queue", store.lookup("dict", "jobs")["object_id"])


def test_ephemeral_objects_go_with_their_connection(store):
    a, b = Owner(), Owner()
    qa = store.create_ephemeral("queue", a)["object_id"]
    qb = store.create_ephemeral("queue", b)["object_id"]
    assert store.list("queue") == []  # never listed
    store.queue_put(qa, b"", [b"x"], 60)
    # Another connection's release is a no-op; its owner's deletes it.
    store.object_op("queue", D.Release(oid=qa), b)
    assert store.by_id("queue", qa)
    store.owner_closed(a)
    with pytest.raises(NotFoundError):
        store.by_id("queue", qa)
    assert store.by_id("queue", qb)


def test_ephemeral_objects_of_a_previous_control_plane_are_deleted(clock):
    db = sqlite3.connect(":memory:", isolation_level=None)
    store = DictQueueStore(db, clock)
    eph = store.create_ephemeral("dict", Owner())["object_id"]
    named = _dict(store)
    store2 = DictQueueStore(db, clock)
    assert store2.by_id("dict", named)
    with pytest.raises(NotFoundError):
        store2.by_id("dict", eph)


# --- dicts ------------------------------------------------------------------------------------------
def test_dict_operations(store):
    oid = _dict(store)
    def op(name, fields):
        return _dict_op(store, name, fields)

    assert op("get", {"oid": oid, "key": b"k"}) == [False, None]
    assert op("put", {"oid": oid, "key": b"k", "value": b"1"}) is True
    assert op("put", {"oid": oid, "key": b"k", "value": b"2", "skip_if_exists": True}) is False
    assert op("get", {"oid": oid, "key": b"k"}) == [True, b"1"]
    op("update", {"oid": oid, "items": [[b"a", b"A"], [b"k", b"3"]]})
    assert op("len", {"oid": oid}) == 2
    assert sorted(tuple(r[1:]) for r in op("page", {"oid": oid})) == [(b"a", b"A"), (b"k", b"3")]
    assert op("pop", {"oid": oid, "key": b"a"}) == [True, b"A"]
    assert op("contains", {"oid": oid, "key": b"a"}) is False
    op("clear", {"oid": oid})
    assert op("len", {"oid": oid}) == 0
    with pytest.raises(MalformedMessage, match="'key'"):
        op("put", {"oid": oid, "key": "not bytes", "value": b""})


def test_dict_entries_expire_after_seven_days_without_a_read_or_write(store, clock):
    oid = _dict(store)
    _dict_op(store, "put", {"oid": oid, "key": b"old", "value": b"1"})
    _dict_op(store, "put", {"oid": oid, "key": b"read", "value": b"2"})
    clock.now += 6 * 86400
    assert _dict_op(store, "get", {"oid": oid, "key": b"read"}) == [True, b"2"]  # a read keeps it
    clock.now += 1 * 86400 + 1
    assert _dict_op(store, "get", {"oid": oid, "key": b"old"}) == [False, None]
    assert _dict_op(store, "get", {"oid": oid, "key": b"read"}) == [True, b"2"]
    assert _dict_op(store, "len", {"oid": oid}) == 1
    # skip_if_exists treats an expired entry as missing.
    _dict_op(store, "put", {"oid": oid, "key": b"x", "value": b"1"})
    clock.now += dq.DICT_ENTRY_TTL + 1
    assert _dict_op(store, "put", {"oid": oid, "key": b"x", "value": b"2", "skip_if_exists": True}) is True
    store.sweep()
    (n,) = store._db.execute("SELECT COUNT(*) FROM dict_entries").fetchone()
    assert n == 1  # the sweep forgot the expired rows


# --- queue limits (pure) ----------------------------------------------------------------------------
def test_partition_keys():
    assert check_partition(None) == b""
    assert check_partition("p") == b"p"
    assert check_partition("é" * 32) == "é".encode() * 32  # 64 bytes
    for bad in ("é" * 33, "x" * 65, 5):
        with pytest.raises(InvalidError, match="between 1 and 64"):
            check_partition(bad)


def test_put_limits():
    check_put(0, 0, [dq.ITEM_MAX_BYTES], True, 0)
    with pytest.raises(RequestSizeError):
        check_put(0, 0, [dq.ITEM_MAX_BYTES + 1], False, 0)
    check_put(dq.PARTITION_MAX_ITEMS - 2, 0, [1, 1], False, 0)
    with pytest.raises(ResourceExhaustedError, match="5000 items"):
        check_put(dq.PARTITION_MAX_ITEMS - 1, 0, [1, 1], False, 0)
    with pytest.raises(ResourceExhaustedError, match="64 MiB"):
        check_put(10, dq.PARTITION_MAX_BYTES - 5, [6], False, 0)
    with pytest.raises(ResourceExhaustedError, match="partitions"):
        check_put(0, 0, [1], True, dq.MAX_PARTITIONS)
    check_put(0, 0, [1], False, dq.MAX_PARTITIONS)  # an existing partition still takes items


def test_partition_count_limit(store, monkeypatch):
    monkeypatch.setattr(dq, "MAX_PARTITIONS", 3)
    oid = _queue(store)
    for p in (b"", b"a", b"b"):
        store.queue_put(oid, p, [b"x"], 60)
    with pytest.raises(ResourceExhaustedError):
        store.queue_put(oid, b"c", [b"x"], 60)
    store.queue_put(oid, b"a", [b"y"], 60)


def test_full_partition(store):
    oid = _queue(store)
    store.queue_put(oid, b"", [b"."] * dq.PARTITION_MAX_ITEMS, 60)
    with pytest.raises(ResourceExhaustedError):
        store.queue_put(oid, b"", [b"."], 60)
    store.queue_put(oid, b"other", [b"."], 60)  # partitions are independent
    assert store.queue_take(oid, b"", 1) == [b"."]
    store.queue_put(oid, b"", [b"."], 60)


# --- partitions and TTL -----------------------------------------------------------------------------
def test_partitions_are_independent_fifos(store):
    oid = _queue(store)
    store.queue_put(oid, b"", [b"0", b"1"], 60)
    store.queue_put(oid, b"a", [b"a0"], 60)
    assert store.queue_take(oid, b"a", 5) == [b"a0"]
    assert store.queue_take(oid, b"a", 5) == []
    assert store.queue_len(oid, b"", False) == 2
    assert store.queue_len(oid, b"", True) == 2
    assert [v for _s, v in store.queue_after(oid, b"", 0)] == [b"0", b"1"]  # iterate does not remove
    assert store.queue_take(oid, b"", 1) == [b"0"]
    store.queue_put(oid, b"b", [b"b0"], 60)
    store.queue_clear(oid, b"", True)
    assert store.queue_len(oid, b"", True) == 0


def test_partition_ttl_counts_from_the_last_put(store, clock):
    oid = _queue(store)
    store.queue_put(oid, b"p", [b"1"], 100)
    store.queue_put(oid, b"q", [b"1"], 10)
    clock.now += 90
    store.queue_put(oid, b"p", [b"2"], 100)  # renews the partition's TTL
    clock.now += 90  # 180 s after the first put, 90 after the last
    assert store.queue_len(oid, b"p", False) == 2
    assert store.queue_len(oid, b"q", False) == 0  # each partition expires on its own
    clock.now += 11
    assert store.queue_take(oid, b"p", 5) == []
    assert store.queue_len(oid, b"", True) == 0
    (n,) = store._db.execute("SELECT COUNT(*) FROM queue_items").fetchone()
    assert n == 0


def test_default_partition_ttl_is_a_day(store, clock):
    oid = _queue(store)
    asyncio.run(_queue_op(store, "put", {"oid": oid, "values": [b"1"]}, lambda: True))
    clock.now += dq.DEFAULT_PARTITION_TTL - 1
    assert store.queue_len(oid, b"", False) == 1
    clock.now += 2
    assert store.queue_len(oid, b"", False) == 0


# --- waiting on the control plane -------------------------------------------------------------------
def test_blocking_get_is_woken_by_a_put(store):
    oid = _queue(store)

    async def main():
        getter = asyncio.ensure_future(_queue_op(store, "get", {"oid": oid, "n": 3, "wait": 30}, lambda: True))
        await asyncio.sleep(0.05)
        assert not getter.done()
        await _queue_op(store, "put", {"oid": oid, "values": [b"a", b"b"]}, lambda: True)
        return await asyncio.wait_for(getter, 5)

    assert asyncio.run(main()) == [b"a", b"b"]


def test_blocking_get_times_out_empty_and_a_gone_client_takes_nothing(store):
    oid = _queue(store)
    assert asyncio.run(_queue_op(store, "get", {"oid": oid, "wait": 0.05}, lambda: True)) == []
    store.queue_put(oid, b"", [b"x"], 60)
    assert asyncio.run(_queue_op(store, "get", {"oid": oid, "wait": 1}, lambda: False)) == []
    assert store.queue_len(oid, b"", False) == 1


def test_blocking_put_waits_for_room(store, monkeypatch):
    monkeypatch.setattr(dq, "PARTITION_MAX_ITEMS", 1)
    oid = _queue(store)
    store.queue_put(oid, b"", [b"1"], 60)

    async def main():
        with pytest.raises(ResourceExhaustedError):
            await _queue_op(store, "put", {"oid": oid, "values": [b"2"], "wait": 0.05}, lambda: True)
        putter = asyncio.ensure_future(_queue_op(store, "put", {"oid": oid, "values": [b"2"], "wait": 30}, lambda: True))
        await asyncio.sleep(0.05)
        assert not putter.done()
        assert await _queue_op(store, "get", {"oid": oid}, lambda: True) == [b"1"]
        await asyncio.wait_for(putter, 5)

    asyncio.run(main())
    assert store.queue_take(oid, b"", 5) == [b"2"]


def test_a_deleted_queue_wakes_its_waiters_with_not_found(store):
    oid = _queue(store)

    async def main():
        getter = asyncio.ensure_future(_queue_op(store, "get", {"oid": oid, "wait": 30}, lambda: True))
        await asyncio.sleep(0.05)
        store.delete("queue", oid)
        with pytest.raises(NotFoundError):
            await asyncio.wait_for(getter, 5)

    asyncio.run(main())


def test_iterate_waits_for_items_after_its_cursor(store):
    oid = _queue(store)
    store.queue_put(oid, b"", [b"a"], 60)

    async def main():
        (first,) = await _queue_op(store, "next", {"oid": oid, "after": 0}, lambda: True)
        nxt = asyncio.ensure_future(_queue_op(store, "next", {"oid": oid, "after": first[0], "wait": 30}, lambda: True))
        await asyncio.sleep(0.05)
        assert not nxt.done()
        store.queue_put(oid, b"", [b"b"], 60)
        return [v for _s, v in await asyncio.wait_for(nxt, 5)]

    assert asyncio.run(main()) == [b"b"]


def test_waits_are_bounded():
    assert dq._wait_seconds(None) == 0
    assert dq._wait_seconds(1e9) == dq.MAX_WAIT_SECONDS
    assert dq._wait_seconds(-3) == 0
    with pytest.raises(InvalidError):
        dq._wait_seconds("forever")


def test_a_cancelled_blocking_get_takes_nothing(store):
    """A client that gave up on a get (cancelled, interrupted) says so; the item stays for the next one."""
    oid = _queue(store)

    async def main():
        getter = asyncio.ensure_future(
            _queue_op(store, "get", {"oid": oid, "wait": 30, "wait_id": "w1"}, lambda: True))
        await asyncio.sleep(0.05)
        await _queue_op(store, "cancel_wait", {"oid": oid, "wait_id": "w1"}, lambda: True)
        assert await asyncio.wait_for(getter, 5) == []
        store.queue_put(oid, b"", [b"kept"], 60)
        # A cancel for a wait that is over is forgotten (nothing is remembered for later).
        await _queue_op(store, "cancel_wait", {"oid": oid, "wait_id": "w1"}, lambda: True)
        assert not store.queues.cancelled_waits and not store.queues.active_waits
        return await _queue_op(store, "get", {"oid": oid, "wait_id": "w1"}, lambda: True)

    assert asyncio.run(main()) == [b"kept"]


def test_a_cancelled_blocking_put_does_not_happen_later(store, monkeypatch):
    monkeypatch.setattr(dq, "PARTITION_MAX_ITEMS", 1)
    oid = _queue(store)
    store.queue_put(oid, b"", [b"1"], 60)

    async def main():
        putter = asyncio.ensure_future(
            _queue_op(store, "put", {"oid": oid, "values": [b"late"], "wait": 30, "wait_id": "p"}, lambda: True))
        await asyncio.sleep(0.05)
        await _queue_op(store, "cancel_wait", {"oid": oid, "wait_id": "p"}, lambda: True)
        with pytest.raises(ResourceExhaustedError):
            await asyncio.wait_for(putter, 5)

    asyncio.run(main())
    assert store.queue_take(oid, b"", 5) == [b"1"]
    assert store.queue_take(oid, b"", 5) == []


@pytest.mark.parametrize("op, msg", [
    ("update", {"items": [[b"k"]]}),
    ("update", {"items": ["kv"]}),
    ("page", {"after": "0; DROP TABLE dict_entries"}),
    ("get", {"key": {"not": "bytes"}}),
])
def test_malformed_dict_messages_are_invalid(store, op, msg):
    oid = _dict(store)
    with pytest.raises((InvalidError, MalformedMessage)):
        _dict_op(store, op, {"oid": oid, **msg})
    assert _dict_op(store, "len", {"oid": oid}) == 0


@pytest.mark.parametrize("op, msg", [
    ("get", {"n": "5"}),
    ("get", {"n": 0}),
    ("next", {"after": 1.5}),
    ("put", {"values": [b"x"], "partition_ttl": True}),
    ("put", {"values": [b"x"], "partition_ttl": -1}),
    ("put", {"values": [b"x"], "partition": "p" * 65}),
    ("get", {"wait": "forever"}),
    ("frobnicate", {}),
])
def test_malformed_queue_messages_are_invalid(store, op, msg):
    oid = _queue(store)
    with pytest.raises((InvalidError, MalformedMessage)):
        asyncio.run(_queue_op(store, op, {"oid": oid, **msg}, lambda: True))
    assert store.queue_len(oid, b"", True) == 0


def test_a_get_cancelled_after_its_answer_gives_its_items_back_in_their_places(store, clock):
    """The client gave up on a blocking get (`asyncio.wait_for` timed out) while its answer was on the
    way: it never used the items, so its late cancellation puts them back, ahead of later items."""
    oid = _queue(store)
    store.queue_put(oid, b"", [b"a", b"b"], 60)

    async def go():
        got = await _queue_op(store, "get", {"oid": oid, "n": 1, "wait": 5, "wait_id": "w1"}, lambda: True)
        store.queue_put(oid, b"", [b"c"], 60)
        await _queue_op(store, "cancel_wait", {"oid": oid, "wait_id": "w1"}, lambda: True)
        await _queue_op(store, "cancel_wait", {"oid": oid, "wait_id": "w1"}, lambda: True)  # once only
        return got

    assert asyncio.run(go()) == [b"a"]
    assert store.queue_take(oid, b"", 10) == [b"a", b"b", b"c"]
    assert store.queue_len(oid, b"", False) == 0


def test_an_answered_get_is_not_taken_back_after_a_while(store, clock):
    oid = _queue(store)
    store.queue_put(oid, b"", [b"a"], 60)

    async def go():
        await _queue_op(store, "get", {"oid": oid, "wait": 5, "wait_id": "w2"}, lambda: True)
        clock.now += dq._ANSWERED_GET_SECONDS + 1
        store.queue_put(oid, b"", [b"b"], 60)  # remembering the next answer forgets the old one
        await _queue_op(store, "get", {"oid": oid, "wait": 5, "wait_id": "w3"}, lambda: True)
        await _queue_op(store, "cancel_wait", {"oid": oid, "wait_id": "w2"}, lambda: True)

    asyncio.run(go())
    assert store.queue_len(oid, b"", False) == 0
