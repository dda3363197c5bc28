"""Dict entries (table `dict_entries`): an entry expires `DICT_ENTRY_TTL` (7 days) after its last read
or write, as Modal's do."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..._protocol import dictqueue as D
from ...exception import InvalidError
from .limits import DICT_ENTRY_TTL, PAGE
from .objects import transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS dict_entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    object_id TEXT NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    touched_at REAL NOT NULL,
    UNIQUE (object_id, key)
);
CREATE INDEX IF NOT EXISTS dict_entries_by_touch ON dict_entries(touched_at);
"""


class DictEntries:
    def __init__(self, db: Any, clock: Callable[[], float]) -> None:
        self._db = db
        self.clock = clock
        db.executescript(SCHEMA)

    def op(self, oid: str, op: D.Operation) -> Any:
        """One Dict operation on the entries of the Dict `oid`."""
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
                (oid, op.after, live, PAGE),
            ).fetchall()
            return [list(r) for r in rows]
        raise InvalidError(f"unknown Dict operation {D.name_of(op)!r}")

    def _upsert(self, oid: str, pairs: list[tuple[bytes, bytes]], now: float) -> None:
        with transaction(self._db):
            self._db.executemany(
                "INSERT INTO dict_entries(object_id, key, value, touched_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(object_id, key) DO UPDATE SET value = excluded.value, touched_at = excluded.touched_at",
                [(oid, k, v, now) for k, v in pairs],
            )

    def drop(self, oid: str) -> None:
        """Every entry of a Dict that is deleted."""
        self._db.execute("DELETE FROM dict_entries WHERE object_id = ?", (oid,))

    def sweep(self, now: float) -> None:
        """Forget expired entries."""
        self._db.execute("DELETE FROM dict_entries WHERE touched_at < ?", (now - DICT_ENTRY_TTL,))
