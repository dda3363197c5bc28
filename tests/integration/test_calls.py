"""Function calls end to end: calls, results, errors, generators, async, logs, containers."""

import asyncio
import itertools
import os
import re
import signal
import subprocess
import sys
import textwrap

import modal
import psutil
import pytest

from homeport.exception import ExecutionError, FunctionTimeoutError, SerializationError
from homeport.testing import app_fixture, wait_for

pytestmark = pytest.mark.integration


basic = app_fixture("basic")


def test_remote_and_local(basic):
    assert basic.square.remote(7) == 49
    assert basic.add.remote(1, b=2) == 3
    assert basic.square.local(5) == 25


def test_runs_in_a_separate_reused_container(basic):
    first = basic.pid.remote()
    assert first != os.getpid()
    assert basic.pid.remote() == first  # warm: the second call does not pay a cold start
    assert psutil.Process(first).is_running()


def test_inside_the_container_is_remote(basic):
    is_local, modal_remote = basic.is_remote.remote()
    assert is_local is False and modal_remote == "1"
    assert modal.is_local() is True


def test_map_ordered_unordered_and_starmap(basic):
    assert list(basic.square.map(range(200))) == [x * x for x in range(200)]
    assert sorted(basic.square.map(range(50), order_outputs=False)) == sorted(x * x for x in range(50))
    assert list(basic.add.starmap([(1, 2), (3, 4)])) == [3, 7]
    assert list(basic.add.map([1, 2], [10, 20])) == [11, 22]
    assert list(basic.add.map([1, 2], kwargs={"b": 5})) == [6, 7]
    assert list(basic.square.map([])) == []


def test_unordered_map_yields_outputs_as_they_complete(basic, tmp_path):
    # Input v completes only after the caller has seen the output for v - 1: completion order is
    # 0, 1, 2 whatever the input order. An ordered map would wait on input 2 first and never get it.
    seen = []
    for value in basic.after_seen.map([2, 1, 0], kwargs={"seen_dir": str(tmp_path)}, order_outputs=False):
        seen.append(value)
        (tmp_path / str(value)).touch()
    assert seen == [0, 1, 2]


def test_for_each_runs_every_input(basic, tmp_path):
    def marked(d):
        return sorted(int(p.name) for p in d.iterdir())

    for name in ("ok", "fails", "ignored"):
        (tmp_path / name).mkdir()
    assert basic.mark.for_each(range(6), kwargs={"directory": str(tmp_path / "ok")}) is None
    assert marked(tmp_path / "ok") == list(range(6))
    with pytest.raises(ValueError, match="failing on 3"):
        basic.mark.for_each(range(6), kwargs={"directory": str(tmp_path / "fails"), "fail_on": 3})
    assert 3 in marked(tmp_path / "fails")
    assert basic.mark.for_each(range(6), kwargs={"directory": str(tmp_path / "ignored"), "fail_on": 3},
                               ignore_exceptions=True) is None
    assert marked(tmp_path / "ignored") == list(range(6))


def test_big_map_moves_in_batches(basic):
    n = 20_000
    assert sum(basic.square.map(range(n))) == sum(x * x for x in range(n))


def test_map_exceptions(basic):
    out = list(basic.maybe_fail.map(range(7), return_exceptions=True))
    assert [type(x) for x in out] == [ValueError, int, int, ValueError, int, int, ValueError]
    with pytest.raises(ValueError, match="multiple of three: 0"):
        list(basic.maybe_fail.map(range(7)))
    assert basic.maybe_fail.for_each(range(4), ignore_exceptions=True) is None


def test_exception_keeps_type_message_and_remote_traceback(basic):
    with pytest.raises(ValueError, match="bad input 1") as info:
        basic.fail.remote(1)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "Remote traceback" in notes and 'raise ValueError(f"bad input {x}")' in notes
    with pytest.raises(KeyError):
        basic.fail.remote(3)


def test_unserializable_argument_and_result(basic):
    import threading

    with pytest.raises(SerializationError, match=r"'square'.*lock"):
        basic.square.remote(threading.Lock())
    with pytest.raises(SerializationError, match=r"returns_lock.*lock"):
        basic.returns_lock.remote()
    assert basic.square.remote(3) == 9  # nothing hangs afterwards


def test_spawn_get_and_from_id_in_another_process(basic):
    call = basic.slow.spawn(0.2)
    with pytest.raises(TimeoutError):
        call.get(timeout=0)
    assert call.get(timeout=30) == 0.2
    call2 = basic.square.spawn(12)
    code = textwrap.dedent(f"""
        import modal
        print(modal.FunctionCall.from_id({call2.object_id!r}).get(timeout=30))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "144", out.stderr


def test_cancel_spawned_call(basic):
    call = basic.slow.spawn(30)
    call.cancel()
    with pytest.raises(modal.exception.RemoteError, match="cancelled"):
        call.get(timeout=30)


def test_generator_streams_items_as_yielded(basic, tmp_path):
    gate = tmp_path / "gate"
    items = []
    for item in basic.gated_gen.remote_gen(str(gate)):
        items.append(item)
        gate.touch()  # the generator only finishes once we have seen the first item
    assert items == ["first", "second"]
    assert list(basic.gen.remote_gen(4)) == [0, 10, 20, 30]
    with pytest.raises(modal.exception.InvalidError, match="remote_gen"):
        basic.gen.remote(3)
    with pytest.raises(modal.exception.InvalidError, match="non-generator"):
        list(basic.square.remote_gen(3))


def test_async_interfaces(basic):
    async def main():
        assert await basic.square.remote.aio(4) == 16
        assert await basic.async_double.remote.aio(21) == 42
        assert [x async for x in basic.square.map.aio(range(5))] == [0, 1, 4, 9, 16]
        call = await basic.square.spawn.aio(6)
        assert await call.get.aio(timeout=30) == 36
        assert [x async for x in basic.gen.remote_gen.aio(3)] == [0, 10, 20]
        assert [x async for x in basic.async_gen.remote_gen.aio(3)] == [0, 1, 2]
        results = await asyncio.gather(*(basic.square.remote.aio(i) for i in range(10)))
        assert results == [i * i for i in range(10)]

    asyncio.run(main())


def test_retries_then_success(basic, tmp_path):
    counter = tmp_path / "count"
    assert basic.flaky.remote(str(counter), 2) == 3
    counter.unlink()
    with pytest.raises(RuntimeError, match="attempt 4 fails"):
        basic.flaky.remote(str(counter), 10)  # 1 try + 3 retries


def test_retry_delays_grow_as_the_policy_says(basic, platform, tmp_path):
    attempts = tmp_path / "attempts"
    assert basic.backs_off.remote(str(attempts)) == 4
    # The control plane logged the schedule it computed with `Retries.delay_for_attempt` ...
    policy = modal.Retries(max_retries=3, initial_delay=0.2, backoff_coefficient=2.0)
    log = (platform.state_dir / "server.log").read_text()
    logged = [float(d) for d in re.findall(r"retrying input \d+ of backs_off \(attempt \d\) in ([\d.]+)s", log)]
    assert logged == [policy.delay_for_attempt(n) for n in (1, 2, 3)] == [0.2, 0.4, 0.8]
    # ... and kept it: no retry started before its delay had passed (a lower bound holds on any machine).
    started = [float(t) for t in attempts.read_text().split()]
    gaps = [b - a for a, b in itertools.pairwise(started)]
    assert all(gap >= delay for gap, delay in zip(gaps, logged)), (gaps, logged)


def test_a_finished_output_does_not_wait_behind_a_long_input(basic, tmp_path):
    """Short inputs travel in batches; the last ones before a long input must not wait for it."""
    import threading

    assert list(basic.wait_for_gate.map(range(20))) == list(range(20))  # the pool learns inputs are short
    gate = tmp_path / "gate"
    got = []

    def consume():
        got.extend(basic.wait_for_gate.map(range(41), [None] * 40 + [str(gate)], order_outputs=False))

    t = threading.Thread(target=consume)
    t.start()
    try:
        assert wait_for(lambda: len(got) == 40, timeout=30), len(got)  # all before the gated one ends
    finally:
        gate.touch()
        t.join(timeout=60)
    assert sorted(got) == list(range(41))


def test_timeout_fails_input_and_replaces_container(basic):
    with pytest.raises(FunctionTimeoutError, match="timed out after 1s"):
        basic.too_slow.remote()


def test_local_secret_is_injected(basic):
    assert basic.read_secret.remote() == "s3cr3t"
    assert basic.env_var.remote("HP_SECRET") is None  # only where requested


def test_sigkilled_container_reruns_its_input_and_an_input_that_kills_every_container_fails_clearly(basic):
    from homeport.server.core.scheduler import INPUT_CRASH_LIMIT, POOL_CRASH_LIMIT
    from homeport.testing import wait_for

    victim = basic.pid.remote()
    call = basic.slow.spawn(30)

    def slow_container(not_pid=None):
        rows = [c for c in _containers() if c["function"] == "slow" and c["running"] and c["pid"] != not_pid]
        return rows[0] if rows else None

    # A crash re-runs the input on a fresh container (without using up `retries=`, which it has none
    # of); crashes in a row with nothing completing fail it (and this ephemeral app's queue), naming
    # the signal.
    killed = None
    for _ in range(min(POOL_CRASH_LIMIT, INPUT_CRASH_LIMIT + 1)):
        assert wait_for(lambda k=killed: slow_container(k) is not None, timeout=30)
        killed = slow_container(killed)["pid"]
        os.kill(killed, signal.SIGKILL)
    with pytest.raises(ExecutionError, match="SIGKILL"):
        call.get(timeout=30)
    assert basic.slow.remote(0) == 0
    assert basic.pid.remote() == victim  # other functions' containers are untouched


def test_sigkilled_container_with_retries_retries_on_a_fresh_container(basic, tmp_path):
    from homeport.testing import wait_for

    marker = tmp_path / "first-attempt-pid"
    call = basic.killed_once.spawn(str(marker))
    assert wait_for(marker.exists, timeout=30)
    first = int(marker.read_text())
    os.kill(first, signal.SIGKILL)
    second = call.get(timeout=60)  # the retry policy applies: no error, a result
    assert second > 0 and second != first
    assert not _alive(first)


def _containers():
    from homeport import _protocol as P
    from homeport._bridge import run_sync
    from homeport._client import get_client

    async def ls():
        return await (await get_client()).request({"t": P.CONTAINER_LIST})

    return run_sync(ls())


def test_app_stop_stops_containers(platform, tmp_path):
    src = tmp_path / "tiny_app.py"
    src.write_text("import os\nimport modal\napp = modal.App('tiny')\n\n@app.function()\ndef pid():\n    return int(os.environ.get('HOMEPORT_HOST_PID') or os.getpid())\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import tiny_app
    finally:
        sys.path.remove(str(tmp_path))
    with tiny_app.app.run(show_logs=False):
        pid = tiny_app.pid.remote()
        assert psutil.pid_exists(pid)
    from homeport.testing import wait_for

    assert wait_for(lambda: not _alive(pid), timeout=20)
    with pytest.raises(ExecutionError, match="not running"):
        tiny_app.pid.remote()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_current_input_and_call_ids(basic):
    assert modal.current_input_id() is None and modal.current_function_call_id() is None  # outside containers
    input_id, call_id = basic.ids.remote()
    assert input_id.startswith("in-") and call_id.startswith("fc-")
    call = basic.ids.spawn()
    assert call.get(timeout=30)[1] == call.object_id
    assert len({i for i, _ in basic.ids.map(range(5))}) == 5  # one per input


def test_functions_call_other_functions_of_their_app_from_containers(basic):
    assert basic.fan_out.remote(4) == (16, [0, 1, 4, 9], True)
    assert basic.uses_class.remote(5) == (10, 15)  # classes too, with parameters


def test_a_call_at_import_in_a_container_fails_fast_saying_why(platform, apps_path):
    # Module-level code runs in every container: each new one would call again while starting and
    # none would serve. The container refuses the call, so the caller gets a clear error instead of
    # a silent wait for `startup_timeout`.
    import import_calls

    with import_calls.app.run(show_logs=False):
        with pytest.raises(ExecutionError) as info:
            import_calls.echo.remote(1)
    text = str(info.value)
    assert "'echo' was called while a container was importing its module" in text
    assert 'if __name__ == "__main__":' in text
