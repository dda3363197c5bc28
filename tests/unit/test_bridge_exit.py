"""The bridge loop is stopped, its thread ended, before the interpreter finalizes (`_bridge._stop_at_exit`,
an exit handler): a uvloop loop left running in a daemon thread crashed `homeport run` as it exited
(SIGSEGV) when the control plane stopped during its call."""

import subprocess
import sys
import textwrap

from homeport import _bridge


async def _answer(x):
    return x


def test_the_exit_handler_stops_the_loop_and_a_later_call_starts_a_new_one():
    assert _bridge.run_sync(_answer(1)) == 1
    loop, thread = _bridge._loop, _bridge._thread
    assert thread is not None and thread.is_alive()
    _bridge._stop_at_exit()
    assert not thread.is_alive()
    assert not loop.is_running()
    assert _bridge.run_sync(_answer(2)) == 2  # (a Homeport call in a later exit handler)
    assert _bridge._loop is not loop


def test_a_process_that_used_homeport_ends_its_bridge_thread_before_it_finalizes():
    # An exit handler registered before homeport is imported runs after the bridge's (last registered
    # runs first): by then the bridge's thread has ended.
    program = textwrap.dedent("""
        import atexit
        seen = {}
        atexit.register(lambda: print("alive" if seen["thread"].is_alive() else "ended", flush=True))

        import homeport._bridge as bridge

        async def one():
            return 1

        assert bridge.run_sync(one()) == 1
        seen["thread"] = bridge._thread
    """)
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ended", out.stdout


def test_an_unstarted_bridge_needs_nothing_at_exit():
    saved = _bridge._loop, _bridge._thread
    try:
        _bridge._loop = _bridge._thread = None
        _bridge._stop_at_exit()  # nothing to stop: returns at once
        assert _bridge._loop is None and _bridge._thread is None
    finally:
        _bridge._loop, _bridge._thread = saved
