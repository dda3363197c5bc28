"""What the control plane observes for people: call history, per-function figures, Prometheus metrics,
and the live stream of calls and log lines (log history is the log store's, `server/logs.py`). The
dashboard and `/metrics` read it; the services feed it.

Cost on the hot path (a decision, measured in `bench/`): per finished input one deque append and a
counter increment; everything else (the histogram, the history table, the figures) is folded in once a
second by `flush`, off the call path. A `.map`'s successful inputs are kept as one history row per call
(its count and total time), its failures one row each, so a million-input map does not write a million
rows; single calls (`.remote`, `.spawn`, schedules, web requests) are one row each.

History lives in the state database with a retention (`HOMEPORT_CALL_RETENTION_DAYS`, default 7 days,
and at most `MAX_HISTORY_ROWS` rows).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from .. import _protocol as P

MAX_HISTORY_ROWS = 100_000
WINDOW_SECONDS = 300.0  # per-function figures cover the last five minutes
SERIES_POINTS = 300  # one sample a second of containers and queue depth per function
RECENT_PER_FUNCTION = 2_048  # durations kept per function for p50/p99 between flushes

STATUS_NAMES = {
    P.SUCCESS: "success", P.FAILURE: "failure", P.TIMEOUT: "timeout", P.TERMINATED: "terminated",
    P.INIT_FAILURE_STATUS: "init_failure", P.INTERNAL: "internal", P.GENERATOR_DONE: "success",
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS call_history (
    call_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    app_id TEXT NOT NULL,
    function TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    finished_at REAL NOT NULL,
    seconds REAL NOT NULL,
    inputs INTEGER NOT NULL,
    retries INTEGER NOT NULL,
    error TEXT,
    traceback TEXT
);
CREATE INDEX IF NOT EXISTS call_history_by_time ON call_history(finished_at);
"""
_COLUMNS = ("call_id", "idx", "app_id", "function", "kind", "status", "finished_at", "seconds", "inputs",
            "retries", "error", "traceback")


def retention_seconds() -> float:
    return float(os.environ.get("HOMEPORT_CALL_RETENTION_DAYS", "7")) * 86400


@dataclass
class FunctionFigures:
    """What one function did lately: finished inputs, cold starts, and sampled pool sizes."""

    app_id: str
    tag: str
    # (t, seconds per input, ok, inputs): a map's chunk of successes is one entry
    done: deque = field(default_factory=lambda: deque(maxlen=RECENT_PER_FUNCTION))
    cold_starts: deque = field(default_factory=lambda: deque(maxlen=256))  # (t, seconds, container id)
    series: deque = field(default_factory=lambda: deque(maxlen=SERIES_POINTS))  # (t, containers, queued)
    pending_histogram: list = field(default_factory=list)  # durations not yet in the histogram
    counts: dict = field(default_factory=dict)  # status -> inputs not yet in the counter
    errors: int = 0
    total: int = 0

    def summary(self, now: float) -> dict[str, Any]:
        recent = [d for d in self.done if d[0] >= now - WINDOW_SECONDS]
        durations = sorted(d[1] for d in recent)
        window = min(WINDOW_SECONDS, max(1.0, now - recent[0][0])) if recent else WINDOW_SECONDS
        return {
            "app_id": self.app_id, "function": self.tag, "total": self.total, "errors": self.errors,
            "inputs_per_s": sum(d[3] for d in recent) / window,
            "p50_ms": _ms(_quantile(durations, 0.5)), "p99_ms": _ms(_quantile(durations, 0.99)),
            "recent_errors": sum(1 for d in recent if not d[2]),
            "cold_starts": [{"at": t, "ms": 1000 * s, "container_id": c} for t, s, c in self.cold_starts],
            "series": [{"at": t, "containers": c, "queued": q} for t, c, q in self.series],
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1000 * seconds


def _quantile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


class _Gauges:
    """Prometheus collector for what is read at scrape time: containers by state, queue depth."""

    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snap = self._read()
        containers = GaugeMetricFamily("homeport_containers", "Containers by state", labels=["state"])
        for state, n in sorted(snap.get("containers_by_state", {}).items()):
            containers.add_metric([state], n)
        yield containers
        queue = GaugeMetricFamily("homeport_queue_depth", "Inputs waiting for a container",
                                  labels=["app", "function"])
        for (app, fn), n in sorted(snap.get("queue_depth", {}).items()):
            queue.add_metric([app, fn], n)
        yield queue


class Observer:
    def __init__(self, db: Any, gauges: Callable[[], dict[str, Any]] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock
        db.executescript(_SCHEMA)
        self.functions: dict[str, FunctionFigures] = {}
        self._rows: list[tuple] = []  # history rows not yet written
        self._maps: dict[str, list] = {}  # call id -> aggregate row of a running map's successes
        self._subscribers: set[asyncio.Queue] = set()
        self.registry = CollectorRegistry()
        self._inputs = Counter("homeport_inputs", "Finished inputs by status", ["app", "function", "status"],
                               registry=self.registry)
        self._latency = Histogram("homeport_input_duration_seconds", "Time an input ran in its container",
                                  ["app", "function"], registry=self.registry,
                                  buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5,
                                           10, 30, 60, 300, float("inf")))
        self._cold = Histogram("homeport_cold_start_seconds", "Container start-up until ready",
                               ["app", "function"], registry=self.registry,
                               buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, float("inf")))
        self._gateway = Counter("homeport_gateway_requests", "HTTP requests through the gateway",
                                ["endpoint", "code"], registry=self.registry)
        if gauges is not None:
            self.registry.register(_Gauges(gauges))

    # --- fed by the services ---------------------------------------------------------------------
    def figures(self, fid: str, app_id: str, tag: str) -> FunctionFigures:
        fig = self.functions.get(fid)
        if fig is None:
            fig = self.functions[fid] = FunctionFigures(app_id, tag)
        return fig

    def input_finished(self, fid: str, app_id: str, tag: str, call_id: str, kind: str, idx: int,
                       status: int, seconds: float, retries: int, data: Any) -> None:
        now = self._clock()
        ok = status in (P.SUCCESS, P.GENERATOR_DONE)
        fig = self.figures(fid, app_id, tag)
        fig.done.append((now, seconds, ok, 1))
        fig.pending_histogram.append(seconds)
        name = STATUS_NAMES.get(status, "error")
        fig.counts[name] = fig.counts.get(name, 0) + 1
        fig.total += 1
        if not ok:
            fig.errors += 1
        if ok and kind == P.KIND_MAP:
            agg = self._maps.get(call_id)
            if agg is None:
                agg = self._maps[call_id] = [call_id, -1, app_id, tag, kind, "success", now, 0.0, 0, 0, None, None]
            agg[6] = now
            agg[7] += seconds
            agg[8] += 1
            agg[9] += retries
            return
        error = tb = None
        if isinstance(data, dict):
            error, tb = data.get("repr") or data.get("msg"), data.get("tb")
        elif status == P.TERMINATED:
            error = "cancelled"
        row = (call_id, idx, app_id, tag, kind, name, now, seconds, 1, retries, error, tb)
        self._rows.append(row)
        self._publish("call", dict(zip(_COLUMNS, row)))

    def inputs_succeeded(self, fid: str, app_id: str, tag: str, call_id: str, n: int, seconds: float,
                         retries: int) -> None:
        """`n` inputs of map call `call_id` succeeded, in `seconds` together (a chunk's): as `n` calls of
        `input_finished`, at the cost of one."""
        now = self._clock()
        fig = self.figures(fid, app_id, tag)
        per = seconds / n
        fig.done.append((now, per, True, n))
        fig.pending_histogram.append(per)
        fig.counts["success"] = fig.counts.get("success", 0) + n
        fig.total += n
        agg = self._maps.get(call_id)
        if agg is None:
            agg = self._maps[call_id] = [call_id, -1, app_id, tag, P.KIND_MAP, "success", now, 0.0, 0, 0, None, None]
        agg[6] = now
        agg[7] += seconds
        agg[8] += n
        agg[9] += retries * n

    def call_closed(self, call_id: str) -> None:
        """A map call has all its outputs: its successes become one history row."""
        agg = self._maps.pop(call_id, None)
        if agg is not None:
            row = tuple(agg)
            self._rows.append(row)
            self._publish("call", dict(zip(_COLUMNS, row)))

    def container_ready(self, fid: str, app_id: str, tag: str, cid: str, seconds: float) -> None:
        self.figures(fid, app_id, tag).cold_starts.append((self._clock(), seconds, cid))
        self._cold.labels(app_id, tag).observe(seconds)

    def log_line(self, app_id: str, tag: str, cid: str, stream: str, text: str, call_id: str | None) -> None:
        """A line the log store keeps: to the pages that tail logs live."""
        self._publish("log", {"at": self._clock(), "app_id": app_id, "function": tag, "container_id": cid,
                              "stream": stream, "call_id": call_id, "text": text})

    def gateway_request(self, endpoint: str, code: int) -> None:
        self._gateway.labels(endpoint, str(code)).inc()

    # --- once a second ---------------------------------------------------------------------------
    def flush(self, pools: dict[str, tuple[int, int]] | None = None) -> None:
        """Fold what was counted into the metrics, sample the pools (fid -> (containers, queued)) and
        write history rows; drop history past its retention."""
        now = self._clock()
        for fid, fig in self.functions.items():
            for status, n in fig.counts.items():
                self._inputs.labels(fig.app_id, fig.tag, status).inc(n)
            fig.counts = {}
            if fig.pending_histogram:
                hist = self._latency.labels(fig.app_id, fig.tag)
                for s in fig.pending_histogram[-RECENT_PER_FUNCTION:]:
                    hist.observe(s)
                fig.pending_histogram = []
            if pools is not None and fid in pools:
                fig.series.append((now, *pools[fid]))
        if self._rows:
            rows, self._rows = self._rows, []
            # One transaction: the connection autocommits, and executemany alone would commit (append
            # to the WAL) once per row, blocking the event loop for ~80 µs per finished call.
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(f"INSERT INTO call_history VALUES ({','.join('?' * len(_COLUMNS))})", rows)

    def prune(self) -> None:
        self._db.execute("DELETE FROM call_history WHERE finished_at < ?", (self._clock() - retention_seconds(),))
        self._db.execute(
            "DELETE FROM call_history WHERE rowid <= (SELECT rowid FROM call_history ORDER BY rowid DESC "
            "LIMIT 1 OFFSET ?)", (MAX_HISTORY_ROWS,))

    # --- read by the dashboard -------------------------------------------------------------------
    def calls(self, search: str = "", status: str = "", function: str = "", limit: int = 200) -> list[dict[str, Any]]:
        self.flush()
        where, args = [], []
        if search:
            where.append("(call_id LIKE ? OR function LIKE ? OR error LIKE ? OR app_id LIKE ?)")
            args += [f"%{search}%"] * 4
        if status:
            where.append("status = ?")
            args.append(status)
        if function:
            where.append("function = ?")
            args.append(function)
        sql = f"SELECT {','.join(_COLUMNS)} FROM call_history"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY finished_at DESC LIMIT ?"
        return [dict(zip(_COLUMNS, r)) for r in self._db.execute(sql, (*args, limit)).fetchall()]

    def call(self, call_id: str) -> list[dict[str, Any]]:
        self.flush()
        rows = self._db.execute(f"SELECT {','.join(_COLUMNS)} FROM call_history WHERE call_id = ? ORDER BY idx",
                                (call_id,)).fetchall()
        return [dict(zip(_COLUMNS, r)) for r in rows]

    # --- live updates ----------------------------------------------------------------------------
    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(maxsize=1000)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._subscribers.discard(queue)

    def _publish(self, kind: str, payload: dict[str, Any]) -> None:
        if not self._subscribers:
            return
        text = json.dumps(payload, default=str)
        for queue in self._subscribers:
            with contextlib.suppress(asyncio.QueueFull):  # a slow page misses lines, never the server
                queue.put_nowait((kind, text))
