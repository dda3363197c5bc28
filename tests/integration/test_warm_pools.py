"""Warm pools of classes, a slow enter hook, and a pool that crash-loops."""

import json
import os
import re
import shutil
import time

import pytest

from homeport import _protocol as P
from homeport._bridge import run_sync
from homeport._client import get_client
from homeport.testing import Logs, homeport_cli, running, wait_for

pytestmark = pytest.mark.integration


def containers(function: str) -> list[dict]:
    async def ls():
        return await (await get_client()).request({"t": P.CONTAINER_LIST})

    return [c for c in run_sync(ls()) if c["function"] == function and c["state"] != "stopping"]


def server_log(platform) -> str:
    return (platform.state_dir / "server.log").read_text()




@pytest.fixture(scope="module")
def warm(platform, apps_path):
    import warm

    try:
        with running("warm"):
            yield warm
    finally:
        shutil.rmtree(os.path.dirname(warm.GATE), ignore_errors=True)


def test_the_default_instance_of_a_class_is_warm_and_reused(warm):
    # The base pool runs with the default values: its enter hook works and it is ready before any call.
    assert wait_for(lambda: [c["state"] for c in containers("DefaultsWarm")] == ["ready"], timeout=60)
    (ready,) = containers("DefaultsWarm")
    assert warm.DefaultsWarm().f.remote() == (ready["pid"], 3)  # served by the warm container
    assert warm.DefaultsWarm(size=3).f.remote() == (ready["pid"], 3)  # the same values: the same pool
    other_pid, n = warm.DefaultsWarm(size=5).f.remote()
    assert n == 5 and other_pid != ready["pid"]
    # min_containers applies to every parameter set in use: the new one stays warm too.
    assert wait_for(lambda: len([c for c in containers("DefaultsWarm") if c["state"] == "ready"]) == 2, timeout=30)
    time.sleep(0.5)
    assert sorted(c["pid"] for c in containers("DefaultsWarm")) == sorted([ready["pid"], other_pid])


def test_a_class_with_required_parameters_warms_each_parameter_set_in_use(warm, platform):
    assert wait_for(lambda: containers("DefaultsWarm"), timeout=60)  # the app's pools are up ...
    assert containers("RequiredWarm") == []  # ... but nothing can be warm without the values
    assert not re.search(r"starting container \S+ for RequiredWarm", server_log(platform))
    pid, greeting = warm.RequiredWarm(name="x").f.remote()
    assert greeting == "hi x"
    assert [c["pid"] for c in containers("RequiredWarm")] == [pid]  # kept warm for name="x"
    assert warm.RequiredWarm(name="x").f.remote() == (pid, "hi x")
    assert warm.RequiredWarm(name="y").f.remote()[0] != pid


def test_a_min_container_takes_no_input_before_its_enter_hook_finished(warm):
    assert wait_for(lambda: containers("SlowWarm"), timeout=60)
    call = warm.SlowWarm().f.spawn()
    time.sleep(0.5)  # room for the scheduler to do the wrong thing
    (starting,) = containers("SlowWarm")  # the queued input waits for the warm container ...
    assert starting["state"] == "starting" and starting["running"] == 0  # ... which takes nothing yet
    open(warm.GATE, "w").close()
    pid, entered = call.get(timeout=60)
    assert entered and pid == starting["pid"]


def test_a_crash_looping_pool_backs_off_and_shows_the_failure_once(platform, apps_path):
    import crashloop

    with Logs() as logs, crashloop.app.run(show_logs=False):
        def failures():
            return re.findall(r"container \S+ of CrashingEnter failed during start-up \((\d+) in a row\).*"
                              r"next start in (\S+)s", server_log(platform))

        assert wait_for(lambda: len(failures()) >= 3, timeout=90), server_log(platform)[-3000:]
        # The restarts back off: 1 s, then 2 s, then 4 s (the schedule the control plane computed) ...
        assert failures()[:3] == [("1", "1"), ("2", "2"), ("3", "4")]
        starts = [_timestamp(line) for line in server_log(platform).splitlines()
                  if re.search(r"starting container \S+ for CrashingEnter", line)]
        fails = [_timestamp(line) for line in server_log(platform).splitlines()
                 if "of CrashingEnter failed during start-up" in line]
        for k, delay in enumerate((1, 2)):  # ... and no start came before its backoff was over
            assert starts[k + 1] - fails[k] >= delay - 0.1, (starts, fails)  # (log stamps lag the decision a little)
        # `app list` says so.
        rows = json.loads(homeport_cli("app", "list", "--json").stdout)
        assert [r["crash_looping"] for r in rows if r["name"] == "crashloop"] == [["CrashingEnter"]]
        # A caller still gets the failure itself.
        with pytest.raises(ConnectionRefusedError, match="the database is down"):
            crashloop.CrashingEnter().f.remote()
    text = logs.text("CrashingEnter")
    assert text.count("ConnectionRefusedError: the database is down") == 1, text  # the traceback, once
    assert "failed during start-up again with the same error" in text
    assert "start-up failure backoff" in text


def _timestamp(line: str) -> float:
    stamp, millis = line[:23].split(",")
    return time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000
