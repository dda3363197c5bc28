"""Deployed apps outlive their client and the control plane; schedules run on time."""

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import modal
import pytest

from homeport.exception import NotFoundError
from homeport.testing import Platform, homeport_cli, wait_for

pytestmark = pytest.mark.integration

PROGRAM = str(Path(__file__).parent / "programs" / "deployed.py")


def _deploy(name: str, version: str = "1", **env: str) -> subprocess.CompletedProcess:
    out = homeport_cli("deploy", PROGRAM, env={**os.environ, "DEPLOY_NAME": name, "DEPLOY_VERSION": version, **env})
    assert out.returncode == 0, out.stderr
    return out


def _in_another_process(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_deployed_functions_are_called_by_name_from_other_programs(platform):
    out = _deploy("dep-a")
    assert "deployed (version 1" in out.stdout
    # the deploying command has exited; another program finds the functions by name
    assert _in_another_process("""
        import modal
        sq = modal.Function.from_name("dep-a", "square")
        g = modal.Cls.from_name("dep-a", "Greeter")
        print(sq.remote(7), list(modal.Function.from_name("dep-a", "count").remote_gen(3)),
              g().greet.remote("ann"), g(greeting="hi").greet.remote("bob"))
    """) == "49 [0, 1, 2] hello ann hi bob"
    with pytest.raises(NotFoundError, match="no function or class 'nope'"):
        modal.Function.from_name("dep-a", "nope").remote()
    with pytest.raises(NotFoundError, match="not deployed"):
        modal.Function.from_name("never-deployed", "square").remote(1)


def test_a_deployed_class_has_variants_like_a_local_one(platform):
    _deploy("dep-variants")
    out = _in_another_process("""
        import modal
        from homeport.exception import FunctionTimeoutError, InvalidError

        G = modal.Cls.from_name("dep-variants", "Greeter")
        base = G().where.remote()
        print(G(greeting="hello").where.remote() == base)  # the default values: the deployed pool itself
        opt = G.with_options(env={"HP_VARIANT": "x"})
        print(opt().where.remote()[2], opt().where.remote()[0] != base[0], base[2])
        print(opt(greeting="hi").greet.remote("ann"))  # options and parameters together
        print(base[1], G.with_concurrency(max_inputs=3)().where.remote()[1].startswith("homeport-input"))
        try:
            G.with_options(timeout=1)().sleep.remote(30)
        except FunctionTimeoutError as exc:
            print("timeout:", exc)
        try:
            G.with_batching(max_batch_size=2, wait_ms=10)().greet.remote("x")
        except InvalidError as exc:
            print("batching:", exc)
    """).splitlines()
    assert out[0] == "True"
    assert out[1] == "x True None"
    assert out[2] == "hi ann"
    assert out[3] == "MainThread True"
    assert out[4].startswith("timeout: Function 'Greeter.sleep' timed out after 1s")
    assert out[5] == "batching: `with_batching` needs a `@modal.batched` method on Greeter."


def test_redeploy_replaces_the_version_and_in_flight_inputs_finish(platform):
    _deploy("dep-b", "1")
    slow = modal.Function.from_name("dep-b", "slow")
    version = modal.Function.from_name("dep-b", "version")
    assert version.remote() == "1"
    in_flight = slow.spawn(2)
    time.sleep(0.5)
    _deploy("dep-b", "2")
    assert version.remote() == "2"  # the same handle now reaches the new version
    assert in_flight.get(timeout=60) == 2  # the old version finished what it had
    history = json.loads(homeport_cli("app", "history", "dep-b", "--json").stdout)
    assert [h["version"] for h in history] == [1, 2]
    rows = json.loads(homeport_cli("app", "list", "--json").stdout)
    assert [r["version"] for r in rows if r["name"] == "dep-b"] == [2]


def test_app_stop_ends_a_deployed_app(platform):
    _deploy("dep-c")
    assert modal.Function.from_name("dep-c", "square").remote(2) == 4
    out = homeport_cli("app", "stop", "dep-c")
    assert out.returncode == 0, out.stderr
    with pytest.raises(NotFoundError, match="not deployed"):
        modal.Function.from_name("dep-c", "square").remote(2)


def test_app_deploy_from_python_and_lookup(platform, tmp_path):
    src = tmp_path / "pyapp.py"
    src.write_text("import modal\napp = modal.App('dep-py')\n\n@app.function()\ndef hello():\n    return 'hi'\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import pyapp
    finally:
        sys.path.remove(str(tmp_path))
    pyapp.app.deploy()
    assert pyapp.hello.remote() == "hi"  # hydrated by the deploy
    assert modal.App.lookup("dep-py").app_id == pyapp.app.app_id
    with pytest.raises(NotFoundError):
        modal.App.lookup("dep-missing")
    assert modal.App.lookup("dep-missing", create_if_missing=True).app_id


def test_deployed_app_and_its_schedule_survive_a_control_plane_restart(tmp_path):
    ticks = tmp_path / "ticks"
    with Platform(str(tmp_path / "p")) as p:
        _deploy("dep-d", TICK_LOG=str(ticks), TICK_SECONDS="1")
        call = modal.Function.from_name("dep-d", "square").spawn(5)
        assert call.get(timeout=60) == 25
        assert wait_for(lambda: ticks.exists() and len(ticks.read_text().split()) >= 2, timeout=30)
        p.restart()
        assert modal.Function.from_name("dep-d", "square").remote(6) == 36  # still served
        assert modal.FunctionCall.from_id(call.object_id).get(timeout=30) == 25  # results kept
        before = len(ticks.read_text().split())
        assert wait_for(lambda: len(ticks.read_text().split()) >= before + 2, timeout=30)  # still scheduled


def test_a_missed_tick_runs_once_on_recovery(tmp_path):
    ticks = tmp_path / "ticks"
    with Platform(str(tmp_path / "p")) as p:
        _deploy("dep-e", TICK_LOG=str(ticks), TICK_SECONDS="3600")
        p.stop()
        # pretend the app was deployed 5 h ago and last ran 3 h ago: three hourly ticks were missed
        db = sqlite3.connect(p.state_dir / "state.db")
        with db:
            db.execute("UPDATE deployments SET created_at = ?", (time.time() - 5 * 3600,))
            app_id = db.execute("SELECT app_id FROM apps WHERE name = 'dep-e'").fetchone()[0]
            db.execute("INSERT OR REPLACE INTO schedule_runs VALUES (?, 'tick', ?)", (app_id, time.time() - 3 * 3600))
        db.close()
        p.start()
        assert wait_for(ticks.exists, timeout=30)
        time.sleep(2)
        assert len(ticks.read_text().split()) == 1  # once, not three times


def test_schedules_also_fire_in_an_ephemeral_app_run(platform, tmp_path):
    ticks = tmp_path / "ticks"
    src = tmp_path / "eph_sched.py"
    src.write_text(textwrap.dedent(f"""
        import modal
        app = modal.App("eph-sched")

        @app.function(schedule=modal.Period(seconds=0.5))
        def tick():
            open({str(ticks)!r}, "a").write("t\\n")
    """))
    sys.path.insert(0, str(tmp_path))
    try:
        import eph_sched
    finally:
        sys.path.remove(str(tmp_path))
    with eph_sched.app.run(show_logs=False):
        assert wait_for(lambda: ticks.exists() and len(ticks.read_text().split()) >= 2, timeout=30)


def test_scheduled_functions_must_take_no_arguments():
    app = modal.App()
    with pytest.raises(modal.exception.InvalidError, match="no arguments"):

        @app.function(schedule=modal.Period(hours=1), serialized=True)
        def needs(x):
            pass
