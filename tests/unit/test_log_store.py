"""The control plane's log store (server/logs.py): queries, size cap, retention."""

import time

import pytest

from homeport.server.logs import LogQuery, LogStore

T0 = time.time() - 100  # within the retention


@pytest.fixture
def store(tmp_path):
    s = LogStore(str(tmp_path / "logs.db"), max_bytes=10_000, retention_seconds=3600)
    yield s
    s.close()


def _fill(store, n=10, ts=T0):
    for i in range(n):
        store.add("ap-1", "stderr" if i % 2 else "stdout", f"line {i}\n", function_id="fu-1", function="f",
                  container_id=f"ta-{i % 3}", call_id=f"fc-{i % 2}", ts=ts + i)


def test_query_filters_and_limits(store):
    _fill(store)
    store.add("ap-2", "stdout", "other app\n", ts=T0 + 5.5)
    assert [e["data"] for e in store.query(LogQuery(app_id="ap-1", limit=3))] == ["line 7\n", "line 8\n", "line 9\n"]
    assert len(store.query(LogQuery(app_id="ap-1", limit=None))) == 10
    assert {e["stream"] for e in store.query(LogQuery(app_id="ap-1", streams=("stderr",)))} == {"stderr"}
    assert [e["data"] for e in store.query(LogQuery(search="line 4"))] == ["line 4\n"]
    assert all(e["container_id"] == "ta-1" for e in store.query(LogQuery(container_id="ta-1")))
    assert len(store.query(LogQuery(call_id="fc-0"))) == 5
    assert len(store.query(LogQuery(function_id="f"))) == len(store.query(LogQuery(function_id="fu-1"))) == 10
    assert [e["data"] for e in store.query(LogQuery(app_id="ap-1", since=T0 + 3, until=T0 + 5))] == ["line 3\n", "line 4\n"]
    first = store.query(LogQuery(app_id="ap-1", limit=None))
    after = store.query(LogQuery(app_id="ap-1", after_id=first[7]["id"], limit=1))
    assert [e["data"] for e in after] == ["line 8\n"]  # following: the next ones, oldest first


def test_unknown_stream_is_refused():
    with pytest.raises(ValueError, match="unknown log stream"):
        LogQuery.from_message({"streams": ["stdin"]})


def test_size_cap_drops_the_oldest(store):
    for i in range(300):
        store.add("ap-1", "stdout", f"{i:04d} " + "x" * 95 + "\n")
    store.flush()
    assert store.bytes <= 10_000
    kept = store.query(LogQuery(app_id="ap-1", limit=None))
    assert kept and kept[-1]["data"].startswith("0299")  # the newest are kept
    assert not any(e["data"].startswith("0000") for e in kept)


def test_retention_drops_old_entries(store):
    store.add("ap-1", "stdout", "ancient\n", ts=time.time() - 7200)
    store.add("ap-1", "stdout", "recent\n")
    store.flush()
    store.sweep()
    assert [e["data"] for e in store.query(LogQuery(app_id="ap-1"))] == ["recent\n"]
