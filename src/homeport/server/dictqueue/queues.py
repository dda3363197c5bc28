"""Queues (tables `queue_partitions`, `queue_items`): partitions of FIFO items, and the blocking gets and
puts that wait here, on the control plane, for a put (or a get) to wake them: clients never poll.

A partition holds at most `PARTITION_MAX_ITEMS` items and `PARTITION_MAX_BYTES` bytes and is cleared
`partition_ttl` seconds after its last put. A blocking get's answer is remembered a while
(`_ANSWERED_GET_SECONDS`): a client that gave up on it while the answer was on the way says so, and the
items it took go back to their places.
"""

from __future__ import annotations

import asyncio
import builtins  # `len` and `list` are used as method and parameter names below
import collections
import time
from collections.abc import Callable
from typing import Any

from ..._protocol import dictqueue as D
from ...exception import InvalidError, ResourceExhaustedError
from .limits import (
    _ANSWERED_GET_SECONDS,
    _ANSWERED_GETS_BYTES,
    DEFAULT_PARTITION_TTL,
    PAGE,
    _wait_seconds,
    check_put,
    check_ttl,
)
from .objects import transaction

SCHEMA = """
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
"""


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


class QueueItems:
    """The Queues' items. `exists(oid)` raises NotFoundError once a Queue is deleted (a waiter woken by
    its deletion finds out with it)."""

    def __init__(self, db: Any, clock: Callable[[], float], exists: Callable[[str], object]) -> None:
        self._db = db
        self.clock = clock
        self._exists = exists
        db.executescript(SCHEMA)
        self._items_added = _Waiters()  # blocking gets and iterators
        self._space_freed = _Waiters()  # blocking puts on a full partition
        self.active_waits: set[str] = set()  # wait ids of blocking gets and puts in progress
        self.cancelled_waits: set[str] = set()
        # Blocking gets answered with items, by wait id, for a while: a client that gave up on one (its
        # cancellation crossed the answer) says so afterwards, and what the get took goes back.
        self._answered_gets: collections.OrderedDict[str, tuple[str, bytes, builtins.list[Any], float]] = (
            collections.OrderedDict())
        self._answered_bytes = 0

    # --- partitions ---------------------------------------------------------------------------------
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

    def drop(self, oid: str) -> None:
        """Every item of a Queue that is deleted; its waiters wake (and find it gone)."""
        self._db.execute("DELETE FROM queue_items WHERE object_id = ?", (oid,))
        self._db.execute("DELETE FROM queue_partitions WHERE object_id = ?", (oid,))
        self._items_added.wake_object(oid)
        self._space_freed.wake_object(oid)

    def sweep(self, now: float) -> None:
        """Forget expired partitions."""
        for oid, part in self._db.execute(
            "SELECT object_id, partition FROM queue_partitions WHERE expires_at <= ?", (now,)
        ).fetchall():
            self._drop_partition(oid, part)

    def put(self, oid: str, part: bytes, values: builtins.list[bytes], ttl: float) -> None:
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
        with transaction(self._db):
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

    def take_rows(self, oid: str, part: bytes, n: int) -> builtins.list[Any]:
        """Remove and return the next `n` items as (seq, value) rows."""
        if self._partition(oid, part) is None:
            return []
        rows = self._db.execute(
            "SELECT seq, value FROM queue_items WHERE object_id = ? AND partition = ? ORDER BY seq LIMIT ?",
            (oid, part, n),
        ).fetchall()
        if rows:
            with transaction(self._db):
                self._db.executemany("DELETE FROM queue_items WHERE seq = ?", [(r[0],) for r in rows])
                self._db.execute(
                    "UPDATE queue_partitions SET items = items - ?, bytes = bytes - ? WHERE object_id = ? AND partition = ?",
                    (len(rows), sum(len(r[1]) for r in rows), oid, part),
                )
            self._space_freed.wake((oid, part))
        return rows

    def restore(self, oid: str, part: bytes, rows: builtins.list[Any]) -> None:
        """Put back items a get took for a client that had given up on it (the answer was never used),
        at their own places in the order."""
        current = self._partition(oid, part)
        items, size = current or (0, 0)
        with transaction(self._db):
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

    def len(self, oid: str, part: bytes, total: bool) -> int:
        if total:
            self.sweep(self.clock())  # expired partitions do not count
            (n,) = self._db.execute(
                "SELECT COALESCE(SUM(items), 0) FROM queue_partitions WHERE object_id = ?", (oid,)
            ).fetchone()
            return n
        current = self._partition(oid, part)
        return 0 if current is None else current[0]

    def clear(self, oid: str, part: bytes, everything: bool) -> None:
        if everything:
            parts = [p for (p,) in self._db.execute(
                "SELECT partition FROM queue_partitions WHERE object_id = ?", (oid,)).fetchall()]
        else:
            parts = [part]
        for p in parts:
            self._drop_partition(oid, p)

    def after(self, oid: str, part: bytes, after: int) -> builtins.list[builtins.list[Any]]:
        if self._partition(oid, part) is None:
            return []
        rows = self._db.execute(
            "SELECT seq, value FROM queue_items WHERE object_id = ? AND partition = ? AND seq > ? ORDER BY seq LIMIT ?",
            (oid, part, after, PAGE),
        ).fetchall()
        return [list(r) for r in rows]

    # --- operations, blocking ones included ---------------------------------------------------------
    async def op(self, op: D._QueueOperation, oid: str, part: bytes, connection_open: Callable[[], bool]) -> Any:
        """One Queue operation on the partition `part` of the Queue `oid` (both checked)."""
        wait_id = op.wait_id
        if isinstance(op, D.QueueCancelWait):  # the client gave up on a blocking get or put (cancelled, interrupted)
            if wait_id in self.active_waits:
                self.cancelled_waits.add(wait_id)
                self._items_added.wake((oid, part))
                self._space_freed.wake((oid, part))
            answered = self._forget_answer(wait_id or "")
            if answered is not None:  # it was answered before the cancellation arrived: nobody took those
                self.restore(answered[0], answered[1], answered[2])
            return None
        if wait_id is None:
            return await self._op(op, oid, part, connection_open)
        if wait_id in self.active_waits:
            raise InvalidError("wait_id must be a new string")
        self.active_waits.add(wait_id)
        taken: builtins.list[Any] = []
        try:
            got = await self._op(
                op, oid, part, lambda: connection_open() and wait_id not in self.cancelled_waits, taken
            )
            if taken:
                self._remember_answer(wait_id, oid, part, taken)
            return got
        finally:
            self.active_waits.discard(wait_id)
            self.cancelled_waits.discard(wait_id)

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

    async def _op(
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
                    self.put(oid, part, values, ttl)
                    return None
                except ResourceExhaustedError:
                    left = deadline - time.monotonic()
                    if left <= 0 or not connection_open():
                        raise
                    await self._space_freed.wait((oid, part), left)
                    self._exists(oid)  # deleted meanwhile: not found
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
                rows = self.take_rows(oid, part, n)
                left = deadline - time.monotonic()
                if rows or left <= 0:
                    if taken is not None:
                        taken += rows
                    return [r[1] for r in rows]
                await self._items_added.wait((oid, part), left)
                self._exists(oid)
        if isinstance(op, D.QueueNext):  # items after seq `after`, without removing them: [[seq, value], ...]
            after = op.after
            while True:
                after_rows = self.after(oid, part, after)
                left = deadline - time.monotonic()
                if after_rows or left <= 0 or not connection_open():
                    return after_rows
                await self._items_added.wait((oid, part), left)
                self._exists(oid)
        if isinstance(op, D.QueueLen):
            return self.len(oid, part, op.total)
        if isinstance(op, D.QueueClear):
            self.clear(oid, part, op.all)
            return None
        raise InvalidError(f"unknown Queue operation {D.name_of(op)!r}")
