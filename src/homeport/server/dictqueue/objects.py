"""The Dict and Queue objects themselves (table `dq_objects`): ids, names, and the connections that own
ephemeral ones. What an object holds is the Dict's (`dicts`) or the Queue's (`queues`)."""

from __future__ import annotations

import builtins  # `list` is a method name of the class below
import contextlib
import secrets
import string
from collections.abc import Callable, Iterator
from typing import Any

from ...exception import AlreadyExistsError, NotFoundError
from .limits import KINDS, check_name

SCHEMA = """
CREATE TABLE IF NOT EXISTS dq_objects (
    object_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT,
    created_at REAL NOT NULL,
    ephemeral INTEGER NOT NULL DEFAULT 0,
    UNIQUE (kind, name)
);
"""

_ID_CHARS = string.ascii_letters + string.digits


class Objects:
    def __init__(self, db: Any, clock: Callable[[], float]) -> None:
        self._db = db
        self.clock = clock
        db.executescript(SCHEMA)
        self._owners: dict[int, set[str]] = {}  # id(connection) -> its ephemeral objects

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

    def ephemeral(self) -> builtins.list[str]:
        """The ids of every ephemeral object (at start-up: those of a previous control plane's clients)."""
        return [oid for (oid,) in self._db.execute("SELECT object_id FROM dq_objects WHERE ephemeral = 1").fetchall()]

    def remove(self, oid: str) -> None:
        self._db.execute("DELETE FROM dq_objects WHERE object_id = ?", (oid,))

    def owns(self, owner: object, oid: str) -> bool:
        return oid in self._owners.get(id(owner), ())

    def disown(self, owner: object, oid: str) -> None:
        self._owners.get(id(owner), set()).discard(oid)

    def owner_closed(self, owner: object) -> set[str]:
        """Forget a connection that closed; the ephemeral objects it owned (to delete)."""
        return self._owners.pop(id(owner), set())


@contextlib.contextmanager
def transaction(db: Any) -> Iterator[None]:
    db.execute("BEGIN")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
