"""What the control plane records for the dashboard: call history rows, maps folded into one row,
retention, live events, and metrics folded off the call path."""

import sqlite3

from prometheus_client import generate_latest

from homeport import _protocol as P
from homeport.server.observe import MAX_HISTORY_ROWS, Observer


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def observer(clock=None, gauges=None) -> Observer:
    return Observer(sqlite3.connect(":memory:"), gauges=gauges, clock=clock or Clock())


def test_a_failed_call_keeps_its_error_and_remote_traceback():
    obs = observer()
    failure = {"exc": b"...", "repr": "ValueError('short by 17')", "tb": "Traceback ...\n  in restock\n"}
    obs.input_finished("fu-1", "ap-1", "restock", "fc-1", P.KIND_UNARY, 0, P.FAILURE, 0.5, 2, failure)
    [row] = obs.calls()
    assert row["status"] == "failure" and row["retries"] == 2 and row["seconds"] == 0.5
    assert row["error"] == "ValueError('short by 17')" and "in restock" in row["traceback"]
    assert obs.call("fc-1") == [row]
    assert obs.calls(status="success") == []
    assert obs.calls(search="short by") == [row]


def test_a_maps_successes_are_one_row_and_its_failures_one_each():
    obs = observer()
    for i in range(1000):
        obs.input_finished("fu-1", "ap-1", "square", "fc-map", P.KIND_MAP, i, P.SUCCESS, 0.001, 0, None)
    obs.input_finished("fu-1", "ap-1", "square", "fc-map", P.KIND_MAP, 1000, P.FAILURE, 0.001, 0,
                       {"repr": "boom", "tb": "tb"})
    assert [r["status"] for r in obs.calls()] == ["failure"]  # successes wait for the call to close
    obs.call_closed("fc-map")
    rows = {r["status"]: r for r in obs.calls()}
    assert rows["success"]["inputs"] == 1000 and abs(rows["success"]["seconds"] - 1.0) < 1e-6
    assert rows["failure"]["idx"] == 1000


def test_history_past_its_retention_is_dropped(monkeypatch):
    clock = Clock()
    obs = observer(clock)
    obs.input_finished("fu-1", "ap-1", "f", "fc-old", P.KIND_UNARY, 0, P.SUCCESS, 0.1, 0, None)
    clock.now += 8 * 86400
    obs.input_finished("fu-1", "ap-1", "f", "fc-new", P.KIND_UNARY, 0, P.SUCCESS, 0.1, 0, None)
    obs.flush()
    obs.prune()
    assert [r["call_id"] for r in obs.calls()] == ["fc-new"]
    monkeypatch.setenv("HOMEPORT_CALL_RETENTION_DAYS", "0")
    clock.now += 1
    obs.prune()
    assert obs.calls() == []
    assert MAX_HISTORY_ROWS >= 10_000


def test_live_subscribers_get_calls_and_logs_and_a_slow_one_never_blocks():
    obs = observer()
    queue = obs.subscribe()
    obs.log_line("ap-1", "f", "ta-1", "stdout", "x\n", None)
    obs.input_finished("fu-1", "ap-1", "f", "fc-1", P.KIND_UNARY, 0, P.SUCCESS, 0.1, 0, None)
    assert [queue.get_nowait()[0] for _ in range(2)] == ["log", "call"]
    for _ in range(5000):  # nobody reads: lines are dropped for that page, the server goes on
        obs.log_line("ap-1", "f", "ta-1", "stdout", "x\n", None)
    obs.unsubscribe(queue)


def test_metrics_count_inputs_by_status_and_figures_cover_recent_inputs():
    clock = Clock()
    obs = observer(clock, gauges=lambda: {"containers_by_state": {"ready": 2}, "queue_depth": {("ap-1", "f"): 7}})
    for i in range(10):
        obs.input_finished("fu-1", "ap-1", "f", f"fc-{i}", P.KIND_UNARY, 0, P.SUCCESS, 0.01 * (i + 1), 0, None)
    obs.input_finished("fu-1", "ap-1", "f", "fc-x", P.KIND_UNARY, 0, P.TIMEOUT, 1.0, 0, {"repr": "timed out"})
    obs.container_ready("fu-1", "ap-1", "f", "ta-1", 0.012)
    obs.gateway_request("shop-api", 200)
    obs.gateway_request("shop-api", 504)
    obs.flush({"fu-1": (2, 7)})
    text = generate_latest(obs.registry).decode()
    assert 'homeport_inputs_total{app="ap-1",function="f",status="success"} 10.0' in text
    assert 'homeport_inputs_total{app="ap-1",function="f",status="timeout"} 1.0' in text
    assert 'homeport_input_duration_seconds_count{app="ap-1",function="f"} 11.0' in text
    assert 'homeport_cold_start_seconds_count{app="ap-1",function="f"} 1.0' in text
    assert 'homeport_containers{state="ready"} 2.0' in text
    assert 'homeport_queue_depth{app="ap-1",function="f"} 7.0' in text
    assert 'homeport_gateway_requests_total{code="504",endpoint="shop-api"} 1.0' in text
    summary = obs.functions["fu-1"].summary(clock.now)
    assert summary["total"] == 11 and summary["errors"] == 1
    assert summary["p50_ms"] == 60.0 and summary["p99_ms"] == 1000.0
    assert summary["series"] == [{"at": clock.now, "containers": 2, "queued": 7}]
    assert summary["cold_starts"][0]["container_id"] == "ta-1"
    obs.flush()  # counted once: a second fold adds nothing
    assert 'status="success"} 10.0' in generate_latest(obs.registry).decode()
