"""The control plane's log store: what containers printed (stdout, stderr) and what the platform said
about them (system), kept in `logs.db` beside the state, capped in size and in age.

Each entry: `id` (increasing), `ts` (seconds since the epoch, when the control plane read the line),
`app_id`, `function_id`, `function` (the tag), `container_id`, `call_id` (the call the container was
running when it printed, when it ran exactly one), `stream` ("stdout" | "stderr" | "system"), `data`
(the line, with its newline).

`LogStore.query(...)` is the reading API (`homeport app logs`, `homeport container logs`, a dashboard):
filters by app, function, container, call, time range, text and stream; the last `limit` entries that
match, or those after an `after_id` (to follow). Writes are batched: `add` is cheap, `flush` writes
them in one transaction (every `FLUSH_SECONDS`, and before every query).

Limits: `HOMEPORT_LOG_MAX_MB` (default 256) of text in all, the oldest entries dropped first;
`HOMEPORT_LOG_RETENTION_DAYS` (default 7), older entries dropped.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("homeport.server.logs")

FLUSH_SECONDS = 0.2
STREAMS = ("stdout", "stderr", "system")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    app_id TEXT NOT NULL,
    function_id TEXT,
    function TEXT,
    container_id TEXT,
    call_id TEXT,
    stream TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_app ON logs (app_id, id);
CREATE INDEX IF NOT EXISTS logs_container ON logs (container_id, id);
CREATE INDEX IF NOT EXISTS logs_ts ON logs (ts);
"""
COLUMNS = ("id", "ts", "app_id", "function_id", "function", "container_id", "call_id", "stream", "data")


@dataclass
class LogQuery:
    """What to read. Every filter given must hold; `limit`: the last that many (None: all)."""

    app_id: str | None = None
    function_id: str | None = None  # or a function's tag
    container_id: str | None = None
    call_id: str | None = None
    since: float | None = None  # ts >= since
    until: float | None = None  # ts < until
    search: str | None = None  # a substring of the line
    streams: tuple[str, ...] | None = None
    after_id: int | None = None  # only entries after this id (following), oldest first
    limit: int | None = 100

    @classmethod
    def from_message(cls, msg: dict[str, Any]) -> LogQuery:
        fields = {k: msg[k] for k in cls.__dataclass_fields__ if msg.get(k) is not None}
        if "streams" in fields:
            bad = [s for s in fields["streams"] if s not in STREAMS]
            if bad:
                raise ValueError(f"unknown log stream {bad[0]!r}: one of {', '.join(STREAMS)}")
            fields["streams"] = tuple(fields["streams"])
        return cls(**fields)


class LogStore:
    def __init__(self, path: str, max_bytes: int | None = None, retention_seconds: float | None = None) -> None:
        self.path = path
        self.max_bytes = max_bytes if max_bytes is not None else int(
            float(os.environ.get("HOMEPORT_LOG_MAX_MB", "256")) * (1 << 20))
        self.retention_seconds = retention_seconds if retention_seconds is not None else (
            float(os.environ.get("HOMEPORT_LOG_RETENTION_DAYS", "7")) * 86400)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self._pending: list[tuple] = []
        self.bytes = self.db.execute("SELECT COALESCE(SUM(LENGTH(data)), 0) FROM logs").fetchone()[0]
        self._last_sweep = 0.0

    # --- writing -----------------------------------------------------------------------------------
    def add(self, app_id: str, stream: str, data: str, *, function_id: str | None = None, function: str | None = None,
            container_id: str | None = None, call_id: str | None = None, ts: float | None = None) -> None:
        self._pending.append((time.time() if ts is None else ts, app_id, function_id, function, container_id,
                              call_id, stream, data))

    def flush(self) -> None:
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        try:
            with self.db:
                self.db.execute("BEGIN")
                self.db.executemany("INSERT INTO logs (ts, app_id, function_id, function, container_id, call_id, "
                                    "stream, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        except sqlite3.Error:
            log.exception("could not write %d log entries", len(rows))
            return
        self.bytes += sum(len(r[7]) for r in rows)
        if self.bytes > self.max_bytes or time.monotonic() - self._last_sweep > 60:
            self.sweep()

    def sweep(self, now: float | None = None) -> None:
        """Drop entries past the retention, then the oldest until the store is within its size cap."""
        self._last_sweep = time.monotonic()
        now = time.time() if now is None else now
        self.db.execute("DELETE FROM logs WHERE ts < ?", (now - self.retention_seconds,))
        self.bytes = self.db.execute("SELECT COALESCE(SUM(LENGTH(data)), 0) FROM logs").fetchone()[0]
        if self.bytes <= self.max_bytes:
            return
        target = self.bytes - int(self.max_bytes * 0.9)  # a margin: not a delete per new line
        freed, cutoff = 0, None
        for row_id, size in self.db.execute("SELECT id, LENGTH(data) FROM logs ORDER BY id"):
            freed += size
            cutoff = row_id
            if freed >= target:
                break
        if cutoff is not None:
            self.db.execute("DELETE FROM logs WHERE id <= ?", (cutoff,))
            self.bytes -= freed

    # --- reading -----------------------------------------------------------------------------------
    def query(self, q: LogQuery) -> list[dict[str, Any]]:
        """The entries that match, oldest first."""
        self.flush()
        where: list[str] = []
        args: list[object] = []  # the query's parameters
        for column, value in (("app_id", q.app_id), ("container_id", q.container_id), ("call_id", q.call_id)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if q.function_id is not None:
            where.append("(function_id = ? OR function = ?)")
            args += [q.function_id, q.function_id]
        if q.since is not None:
            where.append("ts >= ?")
            args.append(q.since)
        if q.until is not None:
            where.append("ts < ?")
            args.append(q.until)
        if q.search:
            where.append("instr(data, ?) > 0")
            args.append(q.search)
        if q.streams:
            where.append(f"stream IN ({', '.join('?' * len(q.streams))})")
            args += list(q.streams)
        if q.after_id is not None:
            where.append("id > ?")
            args.append(q.after_id)
        sql = f"SELECT {', '.join(COLUMNS)} FROM logs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        if q.after_id is not None:  # following: the next ones, in order
            sql += " ORDER BY id" + (" LIMIT ?" if q.limit is not None else "")
            rows = self.db.execute(sql, [*args, q.limit] if q.limit is not None else args).fetchall()
        else:  # the last `limit`
            sql += " ORDER BY id DESC" + (" LIMIT ?" if q.limit is not None else "")
            rows = self.db.execute(sql, [*args, q.limit] if q.limit is not None else args).fetchall()[::-1]
        return [dict(zip(COLUMNS, r)) for r in rows]

    def close(self) -> None:
        self.flush()
        self.db.close()
