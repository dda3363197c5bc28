"""Classes end to end, lifecycle hooks (enter/exit), parameters, with_options."""

import asyncio
import os
import subprocess
import sys
import textwrap

import modal
import psutil
import pytest

from homeport._bridge import run_sync
from homeport._client import get_client
from homeport.exception import (
    ExecutionError,
    FunctionTimeoutError,
    InvalidError,
    NotFoundError,
    UnimplementedError,
)
from homeport.testing import Logs, app_fixture, wait_for

pytestmark = pytest.mark.integration


classes = app_fixture("classes")




def _alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _containers():
    from homeport import _protocol as P

    async def ls():
        return await (await get_client()).request({"t": P.CONTAINER_LIST})

    return run_sync(ls())


def _lines(path):
    return path.read_text().splitlines() if path.exists() else []


# --- methods --------------------------------------------------------------------------------------


def test_method_remote_map_spawn_and_generators(classes):
    obj = classes.Counter()
    assert obj.square.remote(7) == 49
    assert list(obj.square.map(range(10))) == [x * x for x in range(10)]
    assert list(obj.square.starmap([(2,), (3,)])) == [4, 9]
    assert obj.square.spawn(12).get(timeout=30) == 144
    count = obj.incr.remote(0)
    assert list(obj.gen.remote_gen(3)) == [0, count, 2 * count]
    assert obj.async_echo.remote("x") == ("async", "x")
    with pytest.raises(InvalidError, match="remote_gen"):
        obj.gen.remote(3)
    with pytest.raises(AttributeError, match="no method `helper`"):
        obj.helper  # noqa: B018 - a plain method is not callable remotely
    with pytest.raises(AttributeError, match="Did you forget to instantiate"):
        classes.Counter.square  # noqa: B018


def test_method_aio_interfaces(classes):
    async def main():
        obj = classes.Counter()
        assert await obj.square.remote.aio(5) == 25
        assert [x async for x in obj.square.map.aio(range(4))] == [0, 1, 4, 9]
        call = await obj.square.spawn.aio(3)
        assert await call.get.aio(timeout=30) == 9
        assert len([x async for x in obj.gen.remote_gen.aio(2)]) == 2
        assert await asyncio.gather(*(obj.square.remote.aio(i) for i in range(5))) == [0, 1, 4, 9, 16]

    asyncio.run(main())


def test_local_runs_enter_hooks_in_this_process(classes):
    assert classes.Counter().incr.local(5) == 5
    pid, enter_pid = classes.Counter().where.local()
    assert pid == enter_pid == os.getpid()
    assert classes.Ordered().order_seen.local() == ["__init__", "snap_one", "snap_two", "post_one", "post_two"]
    assert classes.Params(name="z").values.local()["greeting"] == "z:3"


# --- enter ----------------------------------------------------------------------------------------


def test_state_set_in_enter_is_kept_by_the_container(classes):
    obj = classes.Counter()
    first = obj.incr.remote()
    assert obj.incr.remote(2) == first + 2  # the same instance served both calls
    pid, enter_pid = obj.where.remote()
    assert pid == enter_pid != os.getpid()  # enter ran in the container that serves the calls


def test_enter_hooks_run_in_definition_order_snap_first(classes):
    assert classes.Ordered().order_seen.remote() == ["__init__", "snap_one", "snap_two", "post_one", "post_two"]


def test_inherited_methods_and_hooks(classes):
    obj = classes.Derived()
    assert obj.inherited.remote() == ["base_setup", "derived_setup"]
    assert obj.overridden.remote() == "derived"


def test_enter_runs_once_per_container_before_any_input(classes, tmp_path):
    log = tmp_path / "enter.log"
    pids = list(classes.Tracked(log=str(log)).work.map(range(24)))
    served = set(pids)
    entered = _lines(log)
    # One enter per container, every container that served inputs entered, none beyond max_containers.
    assert len(entered) == len(set(entered)), entered
    assert sorted(int(p) for p in entered) == sorted(served)
    assert 1 <= len(served) <= 2
    # (`work` raises if an input reaches a container before its enter hook finished.)
    # More inputs for the same parameters go to the warm containers: no enter hook runs twice.
    served |= set(classes.Tracked(log=str(log)).work.map(range(8)))
    assert sorted(int(p) for p in _lines(log)) == sorted(served)
    # The control plane's own count agrees: as many containers as enter runs, together serving every input.
    tracked = [c for c in _containers() if c["function"] == "Tracked"]
    assert len(tracked) == len(_lines(log))
    assert sum(c["inputs_served"] for c in tracked) == 32


def test_failing_enter_hook_fails_the_input_with_its_exception(classes):
    with pytest.raises(ConnectionRefusedError, match="database is down"):
        classes.BrokenEnter().f.remote()


def test_startup_timeout_names_the_slow_enter_hook(classes):
    with pytest.raises(ExecutionError, match=r"enter hook 'load' did not finish within 1s"):
        classes.SlowStart().f.remote()


# --- exit -----------------------------------------------------------------------------------------


def test_exit_hooks_run_on_scale_down_and_a_failing_one_is_logged(classes, tmp_path):
    log = tmp_path / "exit.log"
    with Logs() as logs:
        pid = classes.Exits(log=str(log)).pid.remote()  # scaledown_window=2
        assert _lines(log) == [f"enter {pid}"]
        assert wait_for(lambda: len(_lines(log)) == 3, timeout=20), _lines(log)
        assert _lines(log) == [f"enter {pid}", f"exit-broken {pid}", f"exit-cleanup {pid}"]
        assert wait_for(lambda: not _alive(pid), timeout=20)
        assert wait_for(lambda: "exit hook failed on purpose" in logs.text("Exits"), timeout=10)
    text = logs.text("Exits")
    assert "Exception in exit hook 'broken'" in text and "RuntimeError" in text


def test_an_exit_hook_longer_than_the_grace_period_is_cut_short_and_the_user_told(classes, tmp_path):
    log = tmp_path / "exit.log"
    with Logs() as logs:
        pid = classes.SlowExit(log=str(log)).pid.remote()  # scaledown_window=2, then 10 s of grace
        assert wait_for(lambda: _lines(log) == ["exit-start"], timeout=30)
        assert wait_for(lambda: not _alive(pid), timeout=60)
        assert wait_for(lambda: "exit hooks were cut short" in logs.text("SlowExit"), timeout=10), logs.text()
    assert _lines(log) == ["exit-start"]  # killed in the middle of the hook
    assert "was killed 10s after it was asked to stop" in logs.text("SlowExit")


def test_exit_hooks_run_when_app_run_exits(platform, apps_path, tmp_path, capfd):
    import lifecycle

    log = tmp_path / "exit.log"
    with lifecycle.app.run(show_logs=True):
        pid, handle = lifecycle.Resource(log=str(log)).use.remote()
        assert [lifecycle.Counter.remote(i) for i in range(3)] == [0, 1, 2]
        assert _lines(log) == []
    # `app.run()` returns once the containers have run their exit hooks, and shows what they printed.
    assert _lines(log) == [f"exit-broken {pid}", f"exit-close {handle}"]
    out, err = capfd.readouterr()
    assert "Exception in exit hook 'broken'" in err and "exit hook failed on purpose" in err
    assert f"closed {handle}" in err
    assert "Counter stopping. Processed 3 items" in out
    assert wait_for(lambda: not _alive(pid), timeout=20)


def test_exit_hooks_run_when_the_control_plane_shuts_down(apps_path, tmp_path):
    log = tmp_path / "exit.log"
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {apps_path!r})
        import psutil
        from homeport.testing import Platform
        import lifecycle

        def servers_for(state_dir):
            found = []
            for p in psutil.process_iter(["cmdline"]):
                try:
                    if "homeport.server" in (p.info["cmdline"] or []) and \\
                            p.environ().get("HOMEPORT_STATE_DIR") == state_dir:
                        found.append(p.pid)
                except psutil.Error:
                    pass
            return found

        with Platform() as platform:
            with lifecycle.app.run(show_logs=False):
                print(lifecycle.Resource(log={str(log)!r}).use.remote()[0], flush=True)
                platform.stop()  # the control plane shuts down under the running app
            # Leaving app.run() must not start a new control plane just to stop the app.
            print("servers left:", servers_for(str(platform.state_dir)), flush=True)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    pid = out.stdout.split()[0]
    assert _lines(log) == [f"exit-broken {pid}", f"exit-close handle-{pid}"], out.stdout + out.stderr
    assert "servers left: []" in out.stdout, out.stdout + out.stderr


# --- parameters -----------------------------------------------------------------------------------


def test_parameters_reach_the_instance_before_enter(classes):
    v = classes.Params(name="a").values.remote()
    assert {k: v[k] for k in ("name", "n", "flag", "blob", "greeting")} == {
        "name": "a", "n": 3, "flag": False, "blob": b"\x00raw", "greeting": "a:3"}
    w = classes.Params(name="b", n=7, flag=True, blob=b"\xff").values.remote()
    assert (w["name"], w["n"], w["flag"], w["blob"], w["greeting"]) == ("b", 7, True, b"\xff", "b:7")
    assert classes.Params(name="a").name == "a"


def test_distinct_parameter_values_get_their_own_containers(classes):
    pid = lambda obj: obj.values.remote()["pid"]  # noqa: E731
    a = pid(classes.Params(name="a"))
    assert pid(classes.Params(name="a")) == a
    assert pid(classes.Params(n=3, name="a", flag=False)) == a  # defaults, given in another order
    others = {pid(classes.Params(name="b")), pid(classes.Params(name="a", n=4)),
              pid(classes.Params(name="a", flag=True)), pid(classes.Params(name="a", blob=b"other"))}
    assert a not in others and len(others) == 4


def test_parameter_values_are_checked(classes):
    with pytest.raises(InvalidError, match="Missing required parameter `name`"):
        classes.Params()
    with pytest.raises(TypeError, match="must be int, got bool"):
        classes.Params(name="a", n=True)
    with pytest.raises(TypeError, match="must be str, got int"):
        classes.Params(name=1)
    with pytest.raises(InvalidError, match="positional arguments"):
        classes.Params("a")
    with pytest.raises(InvalidError, match="no parameter `size`"):
        classes.Params(name="a", size=1)


# --- with_options and what is not built -----------------------------------------------------------


def test_with_options_timeout(classes):
    assert classes.Options().sleep.remote(0) == 0
    with pytest.raises(FunctionTimeoutError, match=r"'Options\.sleep' timed out after 1s"):
        classes.Options.with_options(timeout=1)().sleep.remote(10)
    assert classes.Options().sleep.remote(0) == 0  # the base class keeps its own timeout


def test_with_options_secrets_give_separate_variants(classes):
    base = classes.Options()
    a = classes.Options.with_options(secrets=[modal.Secret.from_dict({"HP_K": "a"})])()
    b = classes.Options.with_options(secrets=[modal.Secret.from_dict({"HP_K": "b"})])()
    assert base.env.remote("HP_K") is None
    assert a.env.remote("HP_K") == "a"
    assert b.env.remote("HP_K") == "b"  # same keys, other values: another variant
    assert len({base.pid.remote(), a.pid.remote(), b.pid.remote()}) == 3
    again = classes.Options.with_options(secrets=[modal.Secret.from_dict({"HP_K": "a"})])()
    assert again.pid.remote() == a.pid.remote()
    chained = classes.Options.with_options(env={"HP_K": "x"}).with_options(timeout=60)()
    assert chained.env.remote("HP_K") == "x"


def test_with_options_memory_sets_the_limit_in_the_kernel(classes):
    variant = classes.Options.with_options(memory=(64, 300))()
    assert variant.memory_limit_mib.remote() == 300
    assert variant.pid.remote() != classes.Options().pid.remote()  # a pool of its own


def test_with_options_volumes_mounts_them(classes):
    vol = modal.Volume.from_name("hp-with-options", create_if_missing=True)
    variant = classes.Options.with_options(volumes={"/data/opts": vol})()
    assert variant.write_then_read.remote("/data/opts/note.txt", "kept") == "kept"
    assert b"".join(vol.read_file("note.txt")) == b"kept"  # written to the volume, not the container


def test_with_options_retries(classes, tmp_path):
    with pytest.raises(RuntimeError, match="attempt 1 fails"):
        classes.Options().fails_until.remote(str(tmp_path / "base"), 2)  # the base class has no retries
    retried = classes.Options.with_options(retries=modal.Retries(max_retries=2, initial_delay=0.0))()
    assert retried.fails_until.remote(str(tmp_path / "variant"), 2) == 3


def test_with_options_scaledown_window(classes):
    base_pid = classes.Options().pid.remote()
    pid = classes.Options.with_options(scaledown_window=2)().pid.remote()
    # Its own 2 s window, not the default 60 s: it stops while the base class's container, idle since
    # before it started, keeps the default window.
    assert wait_for(lambda: not _alive(pid), timeout=50)
    assert _alive(base_pid)


def test_with_options_of_unbuilt_features_fails_clearly(classes):
    with pytest.raises(UnimplementedError, match=r"region=.*runs containers on one machine"):
        classes.Options.with_options(region="us-east")().pid.remote()
    with pytest.raises(InvalidError, match=r"with_options\(gpu=...\)` takes one GPU type string"):
        classes.Options.with_options(gpu=["H100", "A100"])
    with pytest.raises(InvalidError, match="Invalid GPU type"):
        classes.Options.with_options(gpu="V100")
    assert classes.Options.with_options(cpu=0.5)().pid.remote() != classes.Options().pid.remote()
    with pytest.raises(TypeError, match="unexpected keyword"):
        classes.Options.with_options(image=None, bogus=1)


def test_with_batching_without_a_batched_method_and_from_name_say_what_is_wrong(classes):
    with pytest.raises(InvalidError, match=r"with_batching.*needs a `@modal\.batched` method"):
        classes.Options.with_batching(max_batch_size=4, wait_ms=10)
    with pytest.raises(NotFoundError, match="deploy"):
        modal.Cls.from_name("classes", "Options")().pid.remote()  # looked up on first use: not deployed


# --- the function-level class form ----------------------------------------------------------------


def test_function_level_class_enters_once_and_calls_per_input(classes):
    outs = [classes.Worker.remote(i) for i in range(3)]
    assert [o[0] for o in outs] == [0, 2, 4]
    assert [o[1] for o in outs] == [1, 2, 3]  # one instance: `processed` keeps counting
    assert {o[2] for o in outs} == {1}  # enter ran once in that container
    assert len({o[3] for o in outs}) == 1 and outs[0][3] != os.getpid()
    mapped = list(classes.Worker.map(range(5)))
    assert [m[0] for m in mapped] == [0, 2, 4, 6, 8]
    assert {m[2] for m in mapped} == {1}
    assert classes.Worker.local(21)[0] == 42


def test_retries_apply_to_methods_but_not_to_generator_methods(classes, tmp_path):
    counter = tmp_path / "unary"
    assert classes.Flaky().unary.remote(str(counter), 2) == 3  # two failures, then success on retry
    gen_log = tmp_path / "gen"
    items = []
    with pytest.raises(RuntimeError, match="generator fails after one item"):
        for item in classes.Flaky().gen.remote_gen(str(gen_log)):
            items.append(item)
    assert items == ["item"] and _lines(gen_log) == ["started"]  # not run again: no duplicate items
