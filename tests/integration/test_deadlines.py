"""Timeouts hold even when user code stops the container from enforcing them itself.

The container times inputs out with a signal; code that catches BaseException, or sits in a long call
that signals cannot interrupt, escapes it. The control plane then fails the input at the deadline (plus
a grace), kills the container and starts another.
"""

import psutil
import pytest

from homeport.exception import ExecutionError, FunctionTimeoutError
from homeport.testing import app_fixture, wait_for

pytestmark = pytest.mark.integration


deadlines = app_fixture("deadlines")


def _alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_code_that_swallows_the_timeout_is_stopped_by_the_control_plane(deadlines):
    first = deadlines.swallow.remote(0)
    # If only the container enforced `timeout=2`, this would return a pid after 60 s.
    with pytest.raises(FunctionTimeoutError, match=r"Function 'swallow' timed out after 2s \(timeout=2\)"):
        deadlines.swallow.remote(60)
    assert wait_for(lambda: not _alive(first), timeout=30)  # that container was killed ...
    assert deadlines.swallow.remote(0) != first  # ... and replaced


def test_inputs_queued_behind_a_stuck_one_still_run(deadlines):
    out = list(deadlines.swallow.map([60, 0, 0], return_exceptions=True))  # max_containers=1
    assert isinstance(out[0], FunctionTimeoutError)
    assert all(isinstance(pid, int) for pid in out[1:]), out


def test_a_call_signals_cannot_interrupt_is_timed_out(deadlines):
    with pytest.raises(FunctionTimeoutError, match=r"Function 'blocked' timed out after 2s"):
        deadlines.blocked.remote(60)


def test_an_enter_hook_that_swallows_the_startup_timeout_fails_the_start(deadlines):
    with pytest.raises(ExecutionError, match=r"did not finish within 2s \(startup_timeout=2\)"):
        deadlines.StuckStart().f.remote()


def test_a_cooperative_timeout_without_concurrency_gets_a_new_container(deadlines):
    out = list(deadlines.cooperative.map([0, 30, 0, 0], return_exceptions=True))  # max_containers=1
    assert isinstance(out[1], FunctionTimeoutError), out
    assert out[0] != out[2] == out[3]  # the container that timed out left; the next inputs ran on a new one
    assert not _alive(out[0]) or wait_for(lambda: not _alive(out[0]), timeout=30)
