"""The autoscaler's knobs with real containers: how many run, and when idle ones stop."""

import os
import re
import signal
import threading
import time

import psutil
import pytest

from homeport import _protocol as P
from homeport._bridge import run_sync
from homeport._client import get_client
from homeport.testing import app_fixture, wait_for

pytestmark = pytest.mark.integration


scaling = app_fixture("scaling")


def containers(function: str) -> list[dict]:
    async def ls():
        return await (await get_client()).request({"t": P.CONTAINER_LIST})

    return [c for c in run_sync(ls()) if c["function"] == function and c["state"] != "stopping"]


def test_max_containers_is_never_exceeded(scaling):
    peak = 0
    stop = threading.Event()

    def watch():
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, len(containers("slow_pid")))
            time.sleep(0.02)

    t = threading.Thread(target=watch)
    t.start()
    try:
        pids = set(scaling.slow_pid.map([0.3] * 12))
    finally:
        stop.set()
        t.join()
    assert 1 < len(pids) <= 3  # it scaled out, up to the limit
    assert peak <= 3


def test_min_containers_are_warm_before_the_first_call(scaling):
    assert wait_for(lambda: sum(c["state"] == "ready" for c in containers("warm_pid")) == 2, timeout=30)
    ready_pids = {c["pid"] for c in containers("warm_pid")}
    assert scaling.warm_pid.remote() in ready_pids  # served by an already-warm container


def test_idle_container_is_stopped_after_the_scaledown_window(scaling, platform):
    pid = scaling.short_lived.remote()
    t0 = time.monotonic()
    # (normally still listed; on a very loaded machine it may be gone already)
    cid = next((c["container_id"] for c in containers("short_lived")), r"\S+")
    assert wait_for(lambda: not containers("short_lived"), timeout=60)
    waited = time.monotonic() - t0
    assert waited >= 1.5  # not before the window (2 s); how soon after it: bench/run.py's scaledown figure
    assert wait_for(lambda: not _alive(pid), timeout=10)
    # The decision is in the control plane's log, with its reason.
    log = (platform.state_dir / "server.log").read_text()
    assert re.search(rf"stopping container {cid}: idle \d+\.\d+s >= scaledown_window", log), log[-2000:]


def test_scale_up_decisions_are_logged_with_a_reason(scaling, platform):
    assert wait_for(lambda: len(containers("warm_pid")) == 2, timeout=30)
    log = (platform.state_dir / "server.log").read_text()
    for c in containers("warm_pid"):  # min_containers=2: started with the plan that asked for them
        assert re.search(rf"starting container {c['container_id']} for warm_pid: plan 2 > [01] live \(0 queued\)", log)
    scaling.slow_pid.remote(0)
    log = (platform.state_dir / "server.log").read_text()
    assert re.search(r"starting container \S+ for slow_pid: plan \d+ > \d+ live \(\d+ queued\)", log)


def test_buffer_containers_are_added_while_busy(scaling):
    call = scaling.buffered.spawn(3)
    # one container runs the input, and two more idle ones are kept ready while it is busy
    assert wait_for(lambda: len(containers("buffered")) >= 3, timeout=30)
    call.get(timeout=60)


def test_sigkilled_container_during_a_big_map_loses_no_input(scaling):
    n = 1000
    results: list = []
    killed = threading.Event()

    def killer():
        assert wait_for(lambda: any(c["running"] for c in containers("work")), timeout=30)
        victim = next(c for c in containers("work") if c["running"])
        os.kill(victim["pid"], signal.SIGKILL)
        killed.set()

    t = threading.Thread(target=killer)
    t.start()
    for out in scaling.work.map(range(n), return_exceptions=True, order_outputs=False):
        results.append(out)
    t.join()
    assert killed.is_set()
    assert len(results) == n  # every input got exactly one output
    ok = [r for r in results if isinstance(r, int)]
    assert len(set(ok)) == len(ok)  # no duplicates
    errors = [r for r in results if not isinstance(r, int)]
    assert all("SIGKILL" in str(e) for e in errors)  # only what the dead container was running failed
    assert len(errors) <= 1


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
