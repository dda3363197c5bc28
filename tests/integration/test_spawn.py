"""`.spawn()` from synchronous code: submissions do not wait for each acceptance, and a refused one
still fails clearly (at the first spawn of a function, at the refused call's `.get()`, at a later
spawn, or on stderr when the process exits)."""

import os
import subprocess
import sys
import textwrap

import modal
import pytest

from homeport import _syncchan
from homeport.exception import NotFoundError

pytestmark = pytest.mark.integration

_APP = "import modal\napp = modal.App('{name}')\n\n@app.function()\ndef square(x):\n    return x * x\n"


def _app_module(tmp_path, name: str):
    """A fresh app module named `name` (its own app, stopped by the test)."""
    (tmp_path / f"{name}.py").write_text(_APP.format(name=name))
    sys.path.insert(0, str(tmp_path))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(tmp_path))


def _stop(app) -> None:
    """Stop the app from outside its `app.run()` block (as `homeport app stop` does)."""
    from homeport import _protocol as P
    from homeport._bridge import run_sync
    from homeport._client import get_client

    async def stop() -> None:
        await (await get_client()).request(P.AppStop(app_id=app.app_id))

    run_sync(stop())


def test_spawned_calls_are_usable_at_once_and_gather_in_order(platform, tmp_path):
    mod = _app_module(tmp_path, "spawn_many")
    with mod.app.run(show_logs=False):
        calls = [mod.square.spawn(i) for i in range(3000)]
        assert len({c.object_id for c in calls}) == 3000  # ids allocated by the caller, at once
        assert calls[-1].get(timeout=60) == 2999 ** 2  # `.get()` right away: never races the acceptance
        again = modal.FunctionCall.from_id(calls[5].object_id)
        assert again.get(timeout=60) == 25
        assert modal.FunctionCall.gather(*calls) == [i * i for i in range(3000)]


def test_spawns_in_flight_and_dict_or_queue_operations_share_the_thread(platform, tmp_path):
    mod = _app_module(tmp_path, "spawn_mixed")
    with mod.app.run(show_logs=False), modal.Queue.ephemeral() as q:
        calls = [mod.square.spawn(i) for i in range(20)]  # acceptances still unread ...
        q.put(1)  # ... when a Queue operation reads the same connection
        assert q.get(timeout=30) == 1
        calls += [mod.square.spawn(i) for i in range(20, 40)]
        assert modal.FunctionCall.gather(*calls) == [i * i for i in range(40)]


def test_the_first_spawn_of_a_stopped_apps_function_fails_at_spawn(platform, tmp_path):
    mod = _app_module(tmp_path, "spawn_stopped")
    with mod.app.run(show_logs=False):
        assert mod.square.spawn(2).get(timeout=60) == 4
        _stop(mod.app)
        _syncchan.SyncChannel.get().close()  # a fresh connection: no spawn of it was accepted here
        with pytest.raises(NotFoundError, match="not running"):
            mod.square.spawn(3)


def test_a_spawn_refused_after_it_returned_stops_later_spawns_and_fails_at_its_get(platform, tmp_path):
    mod = _app_module(tmp_path, "spawn_refused")
    with mod.app.run(show_logs=False):
        assert mod.square.spawn(2).get(timeout=60) == 4  # accepted: this thread's next spawns are pipelined
        _stop(mod.app)
        calls = []  # written, each refused afterwards: a loop of spawns stops within the window, saying why
        # (the refusal of an earlier one, or of one that was still waiting when the answers were read)
        with pytest.raises(NotFoundError, match="not running"):
            for i in range(_syncchan.SPAWN_WINDOW + 2):
                calls.append(mod.square.spawn(i))
        assert 1 <= len(calls) <= _syncchan.SPAWN_WINDOW + 1
        for _ in range(2):  # each time it is asked
            with pytest.raises(NotFoundError, match="not running"):
                calls[0].get(timeout=60)
        with pytest.raises(NotFoundError, match="not running"):
            mod.square.spawn(1)  # the next one waits for its answer again


def test_a_refusal_nobody_asked_about_is_printed_when_the_process_exits(platform, tmp_path):
    (tmp_path / "spawn_exit.py").write_text(_APP.format(name="spawn_exit"))
    code = textwrap.dedent("""
        import spawn_exit as mod

        from homeport import _protocol as P
        from homeport._bridge import run_sync
        from homeport._client import get_client

        async def stop():
            await (await get_client()).request(P.AppStop(app_id=mod.app.app_id))

        with mod.app.run(show_logs=False):
            assert mod.square.spawn(1).get(timeout=60) == 1
            run_sync(stop())
            call = mod.square.spawn(2)  # refused after `spawn` returned; nobody asks
            print(call.object_id, flush=True)
    """)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    call_id = out.stdout.strip()
    assert f"spawned call {call_id} may not run" in out.stderr and "not running" in out.stderr, out.stderr
