"""Dicts and Queues: Modal's distributed key-value store and FIFO queues, kept in the state database.

Both are rows in SQLite (tables below, in the control plane's `state.db`); a name is only ever a
column value, never a path. Keys and values arrive already pickled by the SDK and are stored and
compared as bytes: the control plane never unpickles what a client or a container sent.

Semantics (Modal's, `modal/dict.py` and `modal/queue.py`):

- a Dict entry expires `DICT_ENTRY_TTL` (7 days) after its last read or write;
- a Queue has partitions (the default one has the empty key); each is a FIFO of at most
  `PARTITION_MAX_ITEMS` items and `PARTITION_MAX_BYTES` bytes, an item is at most `ITEM_MAX_BYTES`,
  a queue has at most `MAX_PARTITIONS` partitions, and a partition is cleared `partition_ttl` seconds
  (24 h by default) after its last put;
- a blocking get (or a blocking put on a full partition) waits here, on the control plane, for a
  put (or a get) to wake it, up to its timeout: clients never poll.

Ephemeral objects belong to the connection that created them and are deleted when it closes (and
at start-up: the clients of a previous control plane are gone). The clock is injectable for tests.
"""

from __future__ import annotations

import asyncio
import builtins  # `list` is a method name of the store class below
import collections
import contextlib
import secrets
import string
import time
from collections.abc import Callable, Iterator
from typing import Any

from .._names import object_name_problem
from .._protocol import dictqueue as D
from ..exception import (
    AlreadyExistsError,
    InvalidError,
    NotFoundError,
    RequestSizeError,
    ResourceExhaustedError,
)

DICT_ENTRY_TTL = 7 * 24 * 3600.0
DEFAULT_PARTITION_TTL = D.DEFAULT_PARTITION_TTL
_ANSWERED_GET_SECONDS = 30.0  # how long a blocking get's answer can still be taken back by its cancellation
_ANSWERED_GETS_BYTES = 64 << 20  # and how much of what they took is kept for that, at most
MAX_PARTITIONS = 100_000
PARTITION_MAX_ITEMS = 5_000
PARTITION_MAX_BYTES = 64 << 20
ITEM_MAX_BYTES = 1 << 20
PARTITION_KEY_MAX_BYTES = 64
MAX_WAIT_SECONDS = 60.0  # one request waits at most this long; the SDK asks again (as Modal's does)
_SWEEP_EVERY = 60.0
_PAGE = 1000

KINDS = {"dict": ("Dict", "di-"), "queue": ("Queue", "qu-")}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dq_objects (
    object_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT,
    created_at REAL NOT NULL,
    ephemeral INTEGER NOT NULL DEFAULT 0,
    UNIQUE (kind, name)
);
CREATE TABLE IF NOT EXISTS dict_entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    object_id TEXT NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    touched_at REAL NOT NULL,
    UNIQUE (object_id, key)
);
CREATE TABLE IF NOT EXISTS queue_partitions (
    object_id TEXT NOT NULL,
    partition BLOB NOT NULL,
    items INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    expires_at REAL NOT NULL,
    PRIMARY KEY (object_id, partition)
);
CREATE TABLE IF NOT EXISTS queue_items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    object_id TEXT NOT NULL,
    partition BLOB NOT NULL,
    value BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_items_by_partition ON queue_items(object_id, partition, seq);
CREATE INDEX IF NOT EXISTS dict_entries_by_touch ON dict_entries(touched_at);
"""

_ID_CHARS = string.ascii_letters + string.digits


def check_name(name: Any, kind: str) -> str:
    """Modal's object-name rule, checked where every Dict and Queue name arrives."""
    problem = object_name_problem(name, KINDS[kind][0])
    if problem is not None:
        raise InvalidError(problem)
    return name


def check_partition(partition: Any) -> bytes:
    """The stored key of a partition: b"" for the default one, else 1 to 64 bytes."""
    if partition is None or partition == b"":
        return b""
    if isinstance(partition, str):
        partition = partition.encode("utf-8")
    if not isinstance(partition, bytes) or len(partition) > PARTITION_KEY_MAX_BYTES:
        raise InvalidError("Queue partition key must be between 1 and 64 characters.")
    return partition


def check_ttl(ttl: Any) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
        raise InvalidError(f"`partition_ttl` must be a positive number of seconds, not {ttl!r}")
    return float(ttl)


def check_put(current_items: int, current_bytes: int, sizes: list[int], new_partition: bool, partitions: int) -> None:
    """Raise what Modal raises when `sizes` more items do not fit the partition (pure: unit tested)."""
    for n in sizes:
        if n > ITEM_MAX_BYTES:
            raise RequestSizeError(f"Queue item of {n} bytes is larger than the limit of {ITEM_MAX_BYTES} bytes (1 MiB)")
    if new_partition and partitions >= MAX_PARTITIONS:
        raise ResourceExhaustedError(f"Queue has reached its limit of {MAX_PARTITIONS} partitions")
    if current_items + len(sizes) > PARTITION_MAX_ITEMS:
        raise ResourceExhaustedError(f"Queue partition is full: it holds at most {PARTITION_MAX_ITEMS} items")
    if current_bytes + sum(sizes) > PARTITION_MAX_BYTES:
        raise ResourceExhaustedError("Queue partition is full: it holds at most 64 MiB")


class _Waiters:
    """Futures waiting for a change of one (object, partition); woken all at once, they look again."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, bytes | None], set[asyncio.Future]] = {}

    async def wait(self, key: tuple[str, bytes | None], timeout: float) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._by_key.setdefault(key, set()).add(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            waiting = self._by_key.get(key)
            if waiting is not None:
                waiting.discard(fut)
                if not waiting:
                    del self._by_key[key]

    def wake(self, key: tuple[str, bytes | None]) -> None:
        for fut in self._by_key.pop(key, ()):
            if not fut.done():
                fut.set_result(None)

    def wake_object(self, object_id: str) -> None:
        for key in [k for k in self._by_key if k[0] == object_id]:
            self.wake(key)


class DictQueueStore:
    def __init__(self, db: Any, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self.clock = clock
        db.executescript(_SCHEMA)
        self._items_added = _Waiters()  # blocking gets and iterators
        self._space_freed = _Waiters()  # blocking puts on a full partition
        self._owners: dict[int, set[str]] = {}  # id(connection) -> its ephemeral objects
        self._active_waits: set[str] = set()  # wait ids of blocking gets and puts in progress
        self._cancelled_waits: set[str] = set()
        # Blocking gets answered with items, by wait id, for a while: a client that gave up on one (its
        # cancellation crossed the answer) says so afterwards, and what the get took goes back.
        self._answered_gets: collections.OrderedDict[str, tuple[str, bytes, builtins.list[Any], float]] = (
            collections.OrderedDict())
        self._answered_bytes = 0
        self._last_sweep = 0.0
        # Ephemeral objects of a previous control plane belonged to clients that are gone.
        for (oid,) in db.execute("SELECT object_id FROM dq_objects WHERE ephemeral = 1").fetchall():
            self._delete(oid)
        self.sweep()

    # --- objects -----------------------------------------------------------------------------------
    def _meta(self, row: tuple) -> dict[str, Any]:
        oid, kind, name, created_at = row[:4]
        return {"object_id": oid, "kind": kind, "name": name, "created_at": created_at}

    def _row(self, kind: str, *, name: str | None = None, oid: str | None = None) -> tuple | None:
        if oid is not None:
            return self._db.execute(
                "SELECT object_id, kind, name, created_at FROM dq_objects WHERE object_id = ? AND kind = ?", (oid, kind)
            ).fetchone()
        return self._db.execute(
            "SELECT object_id, kind, name, created_at FROM dq_objects WHERE name = ? AND kind = ?", (name, kind)
        ).fetchone()

    def _insert(self, kind: str, name: str | None, ephemeral: bool) -> dict[str, Any]:
        oid = KINDS[kind][1] + "".join(secrets.choice(_ID_CHARS) for _ in range(22))
        now = self.clock()
        self._db.execute(
            "INSERT INTO dq_objects(object_id, kind, name, created_at, ephemeral) VALUES (?, ?, ?, ?, ?)",
            (oid, kind, name, now, int(ephemeral)),
        )
        return {"object_id": oid, "kind": kind, "name": name, "created_at": now}

    def lookup(self, kind: str, name: Any, create_if_missing: bool = False) -> dict[str, Any]:
        check_name(name, kind)
        row = self._row(kind, name=name)
        if row is not None:
            return self._meta(row)
        if not create_if_missing:
            raise NotFoundError(f"{KINDS[kind][0]} '{name}' not found")
        return self._insert(kind, name, False)

    def create(self, kind: str, name: Any, allow_existing: bool = False) -> dict[str, Any]:
        check_name(name, kind)
        row = self._row(kind, name=name)
        if row is not None:
            if allow_existing:
                return self._meta(row)
            raise AlreadyExistsError(f"{KINDS[kind][0]} '{name}' already exists")
        return self._insert(kind, name, False)

    def create_ephemeral(self, kind: str, owner: object) -> dict[str, Any]:
        meta = self._insert(kind, None, True)
        self._owners.setdefault(id(owner), set()).add(meta["object_id"])
        return meta

    def by_id(self, kind: str, oid: Any) -> dict[str, Any]:
        row = self._row(kind, oid=str(oid)) if isinstance(oid, str) else None
        if row is None:
            raise NotFoundError(f"{KINDS[kind][0]} with id '{oid}' not found")
        return self._meta(row)

    def list(self, kind: str) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT object_id, kind, name, created_at FROM dq_objects WHERE kind = ? AND ephemeral = 0 "
            "ORDER BY created_at DESC",
            (kind,),
        ).fetchall()
        return [self._meta(r) for r in rows]

    def delete(self, kind: str, oid: str, owner: object | None = None) -> None:
        self.by_id(kind, oid)
        self._delete(oid)
        if owner is not None:
            self._owners.get(id(owner), set()).discard(oid)

    def _delete(self, oid: str) -> None:
        self._db.execute("DELETE FROM dict_entries WHERE object_id = ?", (oid,))
        self._db.execute("DELETE FROM queue_items WHERE object_id = ?", (oid,))
        self._db.execute("DELETE FROM queue_partitions WHERE object_id = ?", (oid,))
        self._db.execute("DELETE FROM dq_objects WHERE object_id = ?", (oid,))
        self._items_added.wake_object(oid)
        self._space_freed.wake_object(oid)

    def owner_closed(self, owner: object) -> None:
        """The connection that created ephemeral objects closed: they go with it."""
        for oid in self._owners.pop(id(owner), ()):
            self._delete(oid)

    def sweep(self) -> None:
        """Forget expired dict entries and queue partitions."""
        now = self.clock()
        self._last_sweep = now
        self._db.execute("DELETE FROM dict_entries WHERE touched_at < ?", (now - DICT_ENTRY_TTL,))
        for oid, part in self._db.execute(
            "SELECT object_id, partition FROM queue_partitions WHERE expires_at <= ?", (now,)
        ).fetchall():
            self._drop_partition(oid, part)

    def _maybe_sweep(self) -> None:
        if self.clock() - self._last_sweep >= _SWEEP_EVERY:
            self.sweep()

    # --- dicts -------------------------------------------------------------------------------------
    def dict_op(self, op: D.Operation) -> Any:
        oid = self.by_id("dict", getattr(op, "oid", None))["object_id"]
        self._maybe_sweep()
        now = self.clock()
        live = now - DICT_ENTRY_TTL
        db = self._db
        if isinstance(op, (D.DictGet, D.DictContains, D.DictPop)):
            row = db.execute(
                "SELECT seq, value FROM dict_entries WHERE object_id = ? AND key = ? AND touched_at >= ?",
                (oid, op.key, live),
            ).fetchone()
            contains = isinstance(op, D.DictContains)
            if row is None:
                return False if contains else [False, None]
            if isinstance(op, D.DictPop):
                db.execute("DELETE FROM dict_entries WHERE seq = ?", (row[0],))
                return [True, row[1]]
            db.execute("UPDATE dict_entries SET touched_at = ? WHERE seq = ?", (now, row[0]))
            return True if contains else [True, row[1]]
        if isinstance(op, D.DictPut):
            if op.skip_if_exists:
                db.execute("DELETE FROM dict_entries WHERE object_id = ? AND key = ? AND touched_at < ?",
                           (oid, op.key, live))
                cur = db.execute(
                    "INSERT OR IGNORE INTO dict_entries(object_id, key, value, touched_at) VALUES (?, ?, ?, ?)",
                    (oid, op.key, op.value, now),
                )
                return cur.rowcount == 1
            self._upsert(oid, [(op.key, op.value)], now)
            return True
        if isinstance(op, D.DictUpdate):
            self._upsert(oid, [(bytes(k), bytes(v)) for k, v in op.items], now)
            return None
        if isinstance(op, D.DictLen):
            (n,) = db.execute(
                "SELECT COUNT(*) FROM dict_entries WHERE object_id = ? AND touched_at >= ?", (oid, live)
            ).fetchone()
            return n
        if isinstance(op, D.DictClear):
            db.execute("DELETE FROM dict_entries WHERE object_id = ?", (oid,))
            return None
        if isinstance(op, D.DictPage):  # entries after a cursor, in no promised order: [[seq, key, value], ...]
            rows = db.execute(
                "SELECT seq, key, value FROM dict_entries WHERE object_id = ? AND seq > ? AND touched_at >= ? "
                "ORDER BY seq LIMIT ?",
                (oid, op.after, live, _PAGE),
            ).fetchall()
            return [list(r) for r in rows]
        raise InvalidError(f"unknown Dict operation {D.name_of(op)!r}")

    def _upsert(self, oid: str, pairs: builtins.list[tuple[bytes, bytes]], now: float) -> None:
        with _transaction(self._db):
            self._db.executemany(
                "INSERT INTO dict_entries(object_id, key, value, touched_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(object_id, key) DO UPDATE SET value = excluded.value, touched_at = excluded.touched_at",
                [(oid, k, v, now) for k, v in pairs],
            )

    # --- queues ------------------------------------------------------------------------------------
    def _partition(self, oid: str, part: bytes) -> tuple[int, int] | None:
        """(items, bytes) of a live partition, None if it has none (dropping it if it expired)."""
        row = self._db.execute(
            "SELECT items, bytes, expires_at FROM queue_partitions WHERE object_id = ? AND partition = ?", (oid, part)
        ).fetchone()
        if row is None:
            return None
        if row[2] <= self.clock():
            self._drop_partition(oid, part)
            return None
        return row[0], row[1]

    def _drop_partition(self, oid: str, part: bytes) -> None:
        self._db.execute("DELETE FROM queue_items WHERE object_id = ? AND partition = ?", (oid, part))
        self._db.execute("DELETE FROM queue_partitions WHERE object_id = ? AND partition = ?", (oid, part))
        self._space_freed.wake((oid, part))

    def queue_put(self, oid: str, part: bytes, values: builtins.list[bytes], ttl: float) -> None:
        """Append `values`, or raise what Modal raises when they do not fit."""
        current = self._partition(oid, part)
        partitions = 0
        if current is None:
            (partitions,) = self._db.execute(
                "SELECT COUNT(*) FROM queue_partitions WHERE object_id = ?", (oid,)
            ).fetchone()
        items, size = current or (0, 0)
        check_put(items, size, [len(v) for v in values], current is None, partitions)
        now = self.clock()
        with _transaction(self._db):
            self._db.execute(
                "INSERT INTO queue_partitions(object_id, partition, items, bytes, expires_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(object_id, partition) DO UPDATE SET items = excluded.items, bytes = excluded.bytes, "
                "expires_at = excluded.expires_at",
                (oid, part, items + len(values), size + sum(len(v) for v in values), now + ttl),
            )
            self._db.executemany(
                "INSERT INTO queue_items(object_id, partition, value) VALUES (?, ?, ?)", [(oid, part, v) for v in values]
            )
        self._items_added.wake((oid, part))

    def queue_take(self, oid: str, part: bytes, n: int) -> builtins.list[bytes]:
        return [r[1] for r in self.queue_take_rows(oid, part, n)]

    def queue_take_rows(self, oid: str, part: bytes, n: int) -> builtins.list[Any]:
        """Remove and return the next `n` items as (seq, value) rows."""
        if self._partition(oid, part) is None:
            return []
        rows = self._db.execute(
            "SELECT seq, value FROM queue_items WHERE object_id = ? AND partition = ? ORDER BY seq LIMIT ?",
            (oid, part, n),
        ).fetchall()
        if rows:
            with _transaction(self._db):
                self._db.executemany("DELETE FROM queue_items WHERE seq = ?", [(r[0],) for r in rows])
                self._db.execute(
                    "UPDATE queue_partitions SET items = items - ?, bytes = bytes - ? WHERE object_id = ? AND partition = ?",
                    (len(rows), sum(len(r[1]) for r in rows), oid, part),
                )
            self._space_freed.wake((oid, part))
        return rows

    def queue_restore(self, oid: str, part: bytes, rows: builtins.list[Any]) -> None:
        """Put back items a get took for a client that had given up on it (the answer was never used),
        at their own places in the order."""
        current = self._partition(oid, part)
        items, size = current or (0, 0)
        with _transaction(self._db):
            self._db.execute(
                "INSERT INTO queue_partitions(object_id, partition, items, bytes, expires_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(object_id, partition) DO UPDATE SET items = excluded.items, bytes = excluded.bytes",
                (oid, part, items + len(rows), size + sum(len(r[1]) for r in rows), self.clock() + DEFAULT_PARTITION_TTL),
            )
            self._db.executemany(
                "INSERT OR IGNORE INTO queue_items(seq, object_id, partition, value) VALUES (?, ?, ?, ?)",
                [(seq, oid, part, value) for seq, value in rows],
            )
        self._items_added.wake((oid, part))

    def queue_len(self, oid: str, part: bytes, total: bool) -> int:
        if total:
            self.sweep()
            (n,) = self._db.execute(
                "SELECT COALESCE(SUM(items), 0) FROM queue_partitions WHERE object_id = ?", (oid,)
            ).fetchone()
            return n
        current = self._partition(oid, part)
        return 0 if current is None else current[0]

    def queue_clear(self, oid: str, part: bytes, everything: bool) -> None:
        if everything:
            parts = [p for (p,) in self._db.execute(
                "SELECT partition FROM queue_partitions WHERE object_id = ?", (oid,)).fetchall()]
        else:
            parts = [part]
        for p in parts:
            self._drop_partition(oid, p)

    def queue_after(self, oid: str, part: bytes, after: int) -> builtins.list[builtins.list[Any]]:
        if self._partition(oid, part) is None:
            return []
        rows = self._db.execute(
            "SELECT seq, value FROM queue_items WHERE object_id = ? AND partition = ? AND seq > ? ORDER BY seq LIMIT ?",
            (oid, part, after, _PAGE),
        ).fetchall()
        return [list(r) for r in rows]

    async def queue_op(self, op: D.Operation, connection_open: Callable[[], bool]) -> Any:
        if not isinstance(op, D._QueueOperation):
            raise InvalidError(f"unknown Queue operation {D.name_of(op)!r}")
        oid = self.by_id("queue", op.oid)["object_id"]
        self._maybe_sweep()
        part = check_partition(op.partition)
        wait_id = op.wait_id
        if isinstance(op, D.QueueCancelWait):  # the client gave up on a blocking get or put (cancelled, interrupted)
            if wait_id in self._active_waits:
                self._cancelled_waits.add(wait_id)
                self._items_added.wake((oid, part))
                self._space_freed.wake((oid, part))
            answered = self._forget_answer(wait_id or "")
            if answered is not None:  # it was answered before the cancellation arrived: nobody took those
                self.queue_restore(answered[0], answered[1], answered[2])
            return None
        if wait_id is None:
            return await self._queue_op(op, oid, part, connection_open)
        if wait_id in self._active_waits:
            raise InvalidError("wait_id must be a new string")
        self._active_waits.add(wait_id)
        taken: builtins.list[Any] = []
        try:
            got = await self._queue_op(
                op, oid, part, lambda: connection_open() and wait_id not in self._cancelled_waits, taken
            )
            if taken:
                self._remember_answer(wait_id, oid, part, taken)
            return got
        finally:
            self._active_waits.discard(wait_id)
            self._cancelled_waits.discard(wait_id)

    def _remember_answer(self, wait_id: str, oid: str, part: bytes, rows: builtins.list[Any]) -> None:
        now = self.clock()
        self._answered_gets[wait_id] = (oid, part, rows, now)
        self._answered_bytes += sum(len(r[1]) for r in rows)
        while self._answered_gets:  # a cancellation comes within moments of the answer, or not at all
            first = next(iter(self._answered_gets.values()))
            if now - first[3] < _ANSWERED_GET_SECONDS and self._answered_bytes <= _ANSWERED_GETS_BYTES:
                break
            self._forget_answer(next(iter(self._answered_gets)))

    def _forget_answer(self, wait_id: str) -> tuple[str, bytes, builtins.list[Any], float] | None:
        answered = self._answered_gets.pop(wait_id, None)
        if answered is not None:
            self._answered_bytes -= sum(len(r[1]) for r in answered[2])
        return answered

    async def _queue_op(
        self, op: D._QueueOperation, oid: str, part: bytes, connection_open: Callable[[], bool],
        taken: builtins.list[Any] | None = None,
    ) -> Any:
        """`connection_open()` is False once nobody waits for the answer any more; `taken`: where a get
        notes the (seq, value) rows it took."""
        wait = _wait_seconds(op.wait)
        deadline = time.monotonic() + wait
        if isinstance(op, D.QueuePut):
            values = [bytes(v) for v in op.values]
            ttl = check_ttl(op.partition_ttl)
            while True:
                try:
                    self.queue_put(oid, part, values, ttl)
                    return None
                except ResourceExhaustedError:
                    left = deadline - time.monotonic()
                    if left <= 0 or not connection_open():
                        raise
                    await self._space_freed.wait((oid, part), left)
                    self.by_id("queue", oid)  # deleted meanwhile: not found
                    if not connection_open():  # a put nobody waits for any more must not happen later
                        raise ResourceExhaustedError("the put was cancelled by its client") from None
        if isinstance(op, D.QueueGet):
            n = op.n
            if n < 1:
                raise InvalidError("n_values must be at least 1")
            while True:
                # Never take items for a client that left: they would be lost.
                if not connection_open():
                    return []
                rows = self.queue_take_rows(oid, part, n)
                left = deadline - time.monotonic()
                if rows or left <= 0:
                    if taken is not None:
                        taken += rows
                    return [r[1] for r in rows]
                await self._items_added.wait((oid, part), left)
                self.by_id("queue", oid)
        if isinstance(op, D.QueueNext):  # items after seq `after`, without removing them: [[seq, value], ...]
            after = op.after
            while True:
                after_rows = self.queue_after(oid, part, after)
                left = deadline - time.monotonic()
                if after_rows or left <= 0 or not connection_open():
                    return after_rows
                await self._items_added.wait((oid, part), left)
                self.by_id("queue", oid)
        if isinstance(op, D.QueueLen):
            return self.queue_len(oid, part, op.total)
        if isinstance(op, D.QueueClear):
            self.queue_clear(oid, part, op.all)
            return None
        raise InvalidError(f"unknown Queue operation {D.name_of(op)!r}")

    # --- messages ----------------------------------------------------------------------------------
    def object_op(self, kind: str, op: D.Operation, owner: object) -> Any:
        """Operations on the objects themselves (not their contents)."""
        if isinstance(op, D.Lookup):
            return self.lookup(kind, op.name, op.create_if_missing)
        if isinstance(op, D.Create):
            return self.create(kind, op.name, op.allow_existing)
        if isinstance(op, D.Ephemeral):
            return self.create_ephemeral(kind, owner)
        if isinstance(op, D.ById):
            return self.by_id(kind, op.oid)
        if isinstance(op, D.ListObjects):
            return self.list(kind)
        if isinstance(op, D.Delete):
            return self.delete(kind, op.oid, owner)
        if isinstance(op, D.Release):  # the end of an ephemeral object's `with` block: only its creator's
            if op.oid in self._owners.get(id(owner), ()):
                self.delete(kind, op.oid, owner)
            return None
        raise InvalidError(f"unknown {KINDS[kind][0]} operation {D.name_of(op)!r}")


async def handle(store: DictQueueStore | None, peer: Any, kind: str, op: D.Operation) -> Any:
    """One DICT or QUEUE operation (checked as its type: `homeport._protocol.dictqueue`) of a connection
    (`peer.proto`); `kind` is the message's tag, "dict" or "queue"."""
    if store is None:
        raise LookupError("Dicts and Queues are not available on this control plane")
    if isinstance(op, D.OBJECT_OPERATIONS):
        return store.object_op(kind, op, peer)
    if kind == "dict":
        return store.dict_op(op)
    return await store.queue_op(op, lambda: not peer.proto.is_closing)


@contextlib.contextmanager
def _transaction(db: Any) -> Iterator[None]:
    db.execute("BEGIN")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _wait_seconds(timeout: Any) -> float:
    if timeout is None:
        return 0.0
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout != timeout:
        raise InvalidError(f"timeout must be a number of seconds, not {timeout!r}")
    return max(0.0, min(float(timeout), MAX_WAIT_SECONDS))
