"""Durable state in SQLite (WAL): apps, their functions, and spawned calls with their results.

Durability of inputs: a spawned call of a deployed app (or a schedule's run) is accepted only once its
inputs are committed here (`add_call`), and they stay until its result is (`finish_call`, one
transaction); after a control-plane restart, `unfinished_calls` runs them again (at least once).

fsync policy: WAL with `synchronous=NORMAL` by default. A commit is in the WAL file when the statement
returns, so it survives the control plane's own death (kill -9, OOM, a crash): what was accepted runs
after a restart. The WAL is fsynced at checkpoints, not at each commit, so a power loss or a kernel
crash may lose the last commits (SQLite's documented trade-off; the database itself stays consistent).
`HOMEPORT_DB_SYNC=FULL` fsyncs every commit (durable across power loss, at a few ms per accepted call
on ordinary disks).
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import msgpack

from .._protocol import CallInput

_SCHEMA = """
CREATE TABLE IF NOT EXISTS apps (
    app_id TEXT PRIMARY KEY,
    name TEXT,
    description TEXT,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    stopped_at REAL
);
CREATE TABLE IF NOT EXISTS functions (
    function_id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES apps(app_id),
    tag TEXT NOT NULL,
    definition BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS calls (
    call_id TEXT PRIMARY KEY,
    function_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    status INTEGER,
    result BLOB,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS functions_by_app ON functions(app_id);
CREATE TABLE IF NOT EXISTS deployments (
    app_id TEXT NOT NULL REFERENCES apps(app_id),
    version INTEGER NOT NULL,
    created_at REAL NOT NULL,
    functions BLOB NOT NULL,
    PRIMARY KEY (app_id, version)
);
CREATE TABLE IF NOT EXISTS call_inputs (
    call_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    args BLOB NOT NULL,
    method TEXT,
    PRIMARY KEY (call_id, idx)
);
CREATE TABLE IF NOT EXISTS variants (
    function_id TEXT PRIMARY KEY,
    base_id TEXT NOT NULL,
    request BLOB NOT NULL
);
-- Who deployed a version, from where (`modal app history`): tag, client, deployed_by, commit.
CREATE TABLE IF NOT EXISTS deployment_meta (
    app_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    meta BLOB NOT NULL,
    PRIMARY KEY (app_id, version)
);
CREATE TABLE IF NOT EXISTS schedule_runs (
    app_id TEXT NOT NULL,
    tag TEXT NOT NULL,
    last_fired REAL NOT NULL,
    PRIMARY KEY (app_id, tag)
);
"""


class State:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        sync = os.environ.get("HOMEPORT_DB_SYNC", "NORMAL").upper()
        self.db.execute(f"PRAGMA synchronous={'FULL' if sync == 'FULL' else 'NORMAL'}")  # see the docstring
        self.db.executescript(_SCHEMA)
        self.cipher: Any = None  # seals deployment payloads when set (see server.secrets.Cipher)
        # Rows of calls that are not durable (spawned in an ephemeral app), written by `flush_calls` in
        # one transaction for many (the control plane runs it once per event-loop turn): (sql, params).
        self._later: list[tuple[str, tuple]] = []

    def _seal(self, value: Any) -> bytes:
        return self.cipher.seal(value) if self.cipher is not None else msgpack.packb(value, use_bin_type=True)

    def _open(self, blob: bytes) -> Any:
        if self.cipher is not None:
            return self.cipher.open(blob)
        return msgpack.unpackb(blob, raw=False, strict_map_key=False)

    def close(self) -> None:
        self.flush_calls()
        self.db.close()

    # --- apps --------------------------------------------------------------------------------------
    def create_app(self, app_id: str, name: str | None, description: str | None, state: str) -> None:
        self.db.execute(
            "INSERT INTO apps(app_id, name, description, state, created_at) VALUES (?, ?, ?, ?, ?)",
            (app_id, name, description, state, time.time()),
        )

    def set_app_state(self, app_id: str, state: str) -> None:
        self.db.execute(
            "UPDATE apps SET state = ?, stopped_at = CASE WHEN ? = 'stopped' THEN ? ELSE stopped_at END "
            "WHERE app_id = ?",
            (state, state, time.time(), app_id),
        )

    def apps(self) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT app_id, name, description, state, created_at, stopped_at FROM apps ORDER BY created_at"
        ).fetchall()
        keys = ("app_id", "name", "description", "state", "created_at", "stopped_at")
        return [dict(zip(keys, r)) for r in rows]

    def stop_running_apps(self, reason_state: str = "stopped") -> int:
        """On start-up: ephemeral apps of a previous server are gone with their clients."""
        cur = self.db.execute(
            "UPDATE apps SET state = ?, stopped_at = ? WHERE state IN ('ephemeral', 'detached')",
            (reason_state, time.time()),
        )
        return cur.rowcount

    # --- deployed apps -----------------------------------------------------------------------------
    def deployed_app_id(self, name: str) -> str | None:
        row = self.db.execute(
            "SELECT app_id FROM apps WHERE name = ? AND state IN ('deployed', 'stopped') "
            "AND app_id IN (SELECT app_id FROM deployments) ORDER BY created_at DESC LIMIT 1",
            (name,),
        ).fetchone()
        return row[0] if row else None

    def add_deployment(self, app_id: str, functions: list[dict[str, Any]]) -> tuple[int, float]:
        """Record a new version of a deployed app; returns (version, created_at)."""
        (last,) = self.db.execute("SELECT MAX(version) FROM deployments WHERE app_id = ?", (app_id,)).fetchone()
        version, now = (last or 0) + 1, time.time()
        self.db.execute(
            "INSERT INTO deployments(app_id, version, created_at, functions) VALUES (?, ?, ?, ?)",
            (app_id, version, now, self._seal(functions)),
        )
        return version, now

    def set_deployment_meta(self, app_id: str, version: int, meta: dict[str, Any]) -> None:
        self.db.execute("INSERT OR REPLACE INTO deployment_meta(app_id, version, meta) VALUES (?, ?, ?)",
                        (app_id, version, msgpack.packb(meta, use_bin_type=True)))

    def deployment_meta(self, app_id: str) -> dict[int, dict[str, Any]]:
        rows = self.db.execute("SELECT version, meta FROM deployment_meta WHERE app_id = ?", (app_id,)).fetchall()
        return {v: msgpack.unpackb(m, raw=False) for v, m in rows}

    def deployments(self, app_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT version, created_at, functions FROM deployments WHERE app_id = ? ORDER BY version", (app_id,)
        ).fetchall()
        return [
            {"version": v, "created_at": t, "functions": self._open(f)} for v, t, f in rows
        ]

    def live_deployments(self) -> list[dict[str, Any]]:
        """The latest version of every app still deployed (restored when the control plane starts)."""
        out = []
        for app in self.apps():
            if app["state"] == "deployed":
                versions = self.deployments(app["app_id"])
                if versions:
                    out.append({**app, **versions[-1]})
        return out

    def last_fired(self, app_id: str, tag: str) -> float | None:
        row = self.db.execute("SELECT last_fired FROM schedule_runs WHERE app_id = ? AND tag = ?", (app_id, tag)).fetchone()
        return row[0] if row else None

    def set_last_fired(self, app_id: str, tag: str, when: float) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO schedule_runs(app_id, tag, last_fired) VALUES (?, ?, ?)", (app_id, tag, when)
        )

    # --- functions ---------------------------------------------------------------------------------
    def add_function(self, function_id: str, app_id: str, tag: str, definition: dict[str, Any]) -> None:
        self.add_functions([(function_id, app_id, tag, definition)])

    def add_functions(self, rows: list[tuple[str, str, str, dict[str, Any]]]) -> None:
        """(function id, app id, tag, definition) of each function of an app, in one commit (one per
        function cost ~0.15 ms each, on every `app.run()`)."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT OR REPLACE INTO functions(function_id, app_id, tag, definition) VALUES (?, ?, ?, ?)",
                [(fid, app_id, tag, msgpack.packb(definition, use_bin_type=True)) for fid, app_id, tag, definition in rows],
            )

    # --- spawned calls -----------------------------------------------------------------------------
    def add_call(self, call_id: str, function_id: str, inputs: list[CallInput] | None = None) -> None:
        """Record a spawned call; with `inputs` it is durable: its inputs are
        committed with it, and run again after a restart until a result is recorded."""
        self.flush_calls()
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "INSERT INTO calls(call_id, function_id, created_at) VALUES (?, ?, ?)",
                (call_id, function_id, time.time()),
            )
            if inputs:
                self.db.executemany(
                    "INSERT INTO call_inputs(call_id, idx, args, method) VALUES (?, ?, ?, ?)",
                    [(call_id, i.idx, i.args, i.method) for i in inputs],
                )

    def add_call_later(self, call_id: str, function_id: str) -> None:
        """`add_call` of a call that is not durable, written at the next `flush_calls`."""
        self._later.append(("INSERT INTO calls(call_id, function_id, created_at) VALUES (?, ?, ?)",
                            (call_id, function_id, time.time())))

    def finish_call_later(self, call_id: str, status: int, result: Any) -> None:
        """`finish_call` of a call that is not durable (it has no inputs stored), at the next `flush_calls`."""
        self._later.append(("UPDATE calls SET status = ?, result = ?, finished_at = ? WHERE call_id = ?",
                            (status, msgpack.packb(result, use_bin_type=True), time.time(), call_id)))

    def flush_calls(self) -> None:
        if not self._later:
            return
        later, self._later = self._later, []
        with self.db:
            self.db.execute("BEGIN")
            for sql, params in later:
                self.db.execute(sql, params)

    def finish_call(self, call_id: str, status: int, result: Any) -> None:
        self.flush_calls()
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "UPDATE calls SET status = ?, result = ?, finished_at = ? WHERE call_id = ?",
                (status, msgpack.packb(result, use_bin_type=True), time.time(), call_id),
            )
            self.db.execute("DELETE FROM call_inputs WHERE call_id = ?", (call_id,))

    def unfinished_calls(self) -> list[dict[str, Any]]:
        """Durable calls with no result yet: {"call_id", "function_id", "inputs"}, oldest first."""
        self.flush_calls()
        rows = self.db.execute(
            "SELECT c.call_id, c.function_id, i.idx, i.args, i.method FROM calls c "
            "JOIN call_inputs i ON i.call_id = c.call_id WHERE c.status IS NULL ORDER BY c.created_at, i.idx"
        ).fetchall()
        out: dict[str, dict[str, Any]] = {}
        for call_id, fid, idx, args, method in rows:
            out.setdefault(call_id, {"call_id": call_id, "function_id": fid, "inputs": []})["inputs"].append(
                CallInput(idx, bytes(args), method))
        return list(out.values())

    def function_tag(self, function_id: str) -> tuple[str, str] | None:
        """(app id, tag) of a function of any version that ran here."""
        row = self.db.execute("SELECT app_id, tag FROM functions WHERE function_id = ?", (function_id,)).fetchone()
        return (row[0], row[1]) if row else None

    # --- variants (a class's parameter values, `with_options`) of deployed functions ----------------
    def add_variant(self, function_id: str, base_id: str, request: dict[str, Any]) -> None:
        """How a variant was bound, so that its durable calls can be bound again after a restart
        (sealed: `with_options(env=...)` may hold secret values)."""
        self.db.execute("INSERT OR REPLACE INTO variants(function_id, base_id, request) VALUES (?, ?, ?)",
                        (function_id, base_id, self._seal(request)))

    def variant(self, function_id: str) -> tuple[str, dict[str, Any]] | None:
        row = self.db.execute("SELECT base_id, request FROM variants WHERE function_id = ?", (function_id,)).fetchone()
        return (row[0], self._open(row[1])) if row else None

    def call_app_id(self, call_id: str) -> str | None:
        """The app of a spawned call's function (None if there is no such call)."""
        row = self.db.execute(
            "SELECT f.app_id FROM calls c JOIN functions f ON f.function_id = c.function_id WHERE c.call_id = ?",
            (call_id,),
        ).fetchone()
        return row[0] if row else None

    def get_call(self, call_id: str) -> tuple[int | None, Any] | None:
        self.flush_calls()
        row = self.db.execute("SELECT status, result FROM calls WHERE call_id = ?", (call_id,)).fetchone()
        if row is None:
            return None
        status, blob = row
        return status, (msgpack.unpackb(blob, raw=False) if blob is not None else None)
