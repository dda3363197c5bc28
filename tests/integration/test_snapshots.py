"""Memory snapshots and templates — containers start as copies of a prepared process."""

import importlib
import os
import re
import shutil
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.integration

APP = textwrap.dedent('''
    import os
    import random
    import time

    import modal

    app = modal.App("snapshots-{suffix}")
    LOG = os.environ["SNAP_TEST_LOG"]


    def note(what):
        with open(LOG, "a") as f:
            f.write(f"{{what}} {{int(os.environ.get('HOMEPORT_HOST_PID') or os.getpid())}}\\n")


    note("import")


    @app.cls(enable_memory_snapshot=True, min_containers=3, max_containers=3, env={{"SNAP_TEST_LOG": LOG}})
    class Model:
        @modal.enter(snap=True)
        def load(self):
            note("snap")
            self.weights = list(range(100_000))  # state built once, before the snapshot
            self.loaded_in = int(os.environ.get('HOMEPORT_HOST_PID') or os.getpid())

        @modal.enter()
        def connect(self):
            note("enter")
            self.token = random.random()  # per-container state must differ

        @modal.method()
        def info(self, delay=0.0):
            time.sleep(delay)
            return {{"pid": int(os.environ.get('HOMEPORT_HOST_PID') or os.getpid()), "token": self.token, "n": len(self.weights), "loaded_in": self.loaded_in}}
''')


def _load(tmp_path, name, suffix="a"):
    path = tmp_path / f"{name}.py"
    path.write_text(APP.format(suffix=suffix))
    sys.path.insert(0, str(tmp_path))
    try:
        sys.modules.pop(name, None)
        importlib.invalidate_caches()
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))


def _lines(log, kind):
    return [line.split()[1] for line in log.read_text().splitlines() if line.split()[0] == kind]


def _three_containers(mod):
    seen = {}
    deadline = time.monotonic() + 60
    obj = mod.Model()
    while len(seen) < 3 and time.monotonic() < deadline:
        for info in obj.info.map([0.3] * 6):
            seen[info["pid"]] = info
    return list(seen.values())


def test_snap_hooks_run_once_for_many_containers(platform, tmp_path, monkeypatch):
    log = tmp_path / "log"
    monkeypatch.setenv("SNAP_TEST_LOG", str(log))
    mod = _load(tmp_path, "snapapp1")
    with mod.app.run(show_logs=False):
        infos = _three_containers(mod)
    assert len(infos) == 3
    assert len(_lines(log, "snap")) == 1  # the snapshot was taken once...
    assert len(_lines(log, "enter")) == 3  # ...and the other enter hooks ran in every container
    assert len({i["token"] for i in infos}) == 3  # per-container values differ
    assert all(i["n"] == 100_000 for i in infos)  # state from the snapshot is there
    assert all(i["loaded_in"] != i["pid"] for i in infos)  # built in the template, not in the container
    assert set(_lines(log, "snap")) == {str(infos[0]["loaded_in"])}


def test_snapshot_is_reused_across_runs_and_invalidated_when_the_code_changes(platform, tmp_path, monkeypatch):
    log = tmp_path / "log"
    monkeypatch.setenv("SNAP_TEST_LOG", str(log))
    mod = _load(tmp_path, "snapapp2", suffix="b")
    with mod.app.run(show_logs=False):
        mod.Model().info.remote()
    with mod.app.run(show_logs=False):
        mod.Model().info.remote()
    assert len(_lines(log, "snap")) == 1  # same code: the second run starts from the same snapshot
    (tmp_path / "snapapp2.py").write_text(APP.format(suffix="b") + "\n# changed\n")
    with mod.app.run(show_logs=False):
        mod.Model().info.remote()
    assert len(_lines(log, "snap")) == 2  # the code changed: a new snapshot


def test_without_snapshot_every_container_runs_every_hook(platform, tmp_path, monkeypatch):
    log = tmp_path / "log"
    monkeypatch.setenv("SNAP_TEST_LOG", str(log))
    path = tmp_path / "nosnap.py"
    path.write_text(APP.format(suffix="c").replace("enable_memory_snapshot=True, ", "").replace("snap=True", ""))
    sys.path.insert(0, str(tmp_path))
    try:
        mod = importlib.import_module("nosnap")
    finally:
        sys.path.remove(str(tmp_path))
    with mod.app.run(show_logs=False):
        infos = _three_containers(mod)
    pids = {str(i["pid"]) for i in infos}
    assert pids <= set(_lines(log, "snap"))  # each container ran the snap hook itself
    assert pids <= set(_lines(log, "import"))  # and imported the module itself
    assert all(i["loaded_in"] == i["pid"] for i in infos)


def test_a_snapshot_that_cannot_be_taken_falls_back_to_a_cold_start(platform, tmp_path, monkeypatch):
    log = tmp_path / "log"
    monkeypatch.setenv("SNAP_TEST_LOG", str(log))
    src = APP.format(suffix="d").replace(
        '        note("snap")\n',
        '        note("snap")\n        import threading\n'
        "        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n",
    )
    assert "threading.Thread" in src
    (tmp_path / "threadsnap.py").write_text(src)
    sys.path.insert(0, str(tmp_path))
    try:
        mod = importlib.import_module("threadsnap")
    finally:
        sys.path.remove(str(tmp_path))
    with mod.app.run(show_logs=False):
        info = mod.Model().info.remote()
        timelines = _timelines("Model", mod.app)
    assert info["n"] == 100_000  # it still works, from a normal cold start
    assert info["loaded_in"] == info["pid"]
    assert timelines and all("process" in t and "import" in t for t in timelines)  # a fresh process, timed
    server_log = (platform.state_dir / "server.log").read_text()
    assert "threads started before the snapshot" in server_log


def test_timeline_shows_restore_and_enter_hooks(platform, tmp_path, monkeypatch):
    log = tmp_path / "log"
    monkeypatch.setenv("SNAP_TEST_LOG", str(log))
    mod = _load(tmp_path, "snapapp5", suffix="e")
    from homeport.testing import homeport_cli

    with mod.app.run(show_logs=False):
        mod.Model().info.remote()
        out = homeport_cli("container", "list", "--json")
        table = homeport_cli("container", "list", env={**os.environ, "COLUMNS": "250"})
    import json

    rows = [r for r in json.loads(out.stdout) if r["function"] == "Model"]
    assert rows and all("restore" in r["timeline"] and "enter:connect" in r["timeline"] for r in rows)
    assert os.path.exists(log)
    line = next(line for line in table.stdout.splitlines() if "Model" in line)
    assert re.search(r"\d+(\.\d)?ms: restore \d+(\.\d)?ms · enter:connect \d+(\.\d)?ms", line), table.stdout


def test_open_sockets_refuse_the_snapshot(platform, tmp_path, monkeypatch):
    log = tmp_path / "log"
    monkeypatch.setenv("SNAP_TEST_LOG", str(log))
    src = APP.format(suffix="f").replace(
        '        note("snap")\n',
        '        note("snap")\n        import socket\n'
        "        self.sock = socket.socket()\n        self.sock.bind(('127.0.0.1', 0))\n        self.sock.listen()\n",
    )
    assert "self.sock.listen()" in src
    (tmp_path / "socksnap.py").write_text(src)
    sys.path.insert(0, str(tmp_path))
    try:
        mod = importlib.import_module("socksnap")
    finally:
        sys.path.remove(str(tmp_path))
    with mod.app.run(show_logs=False):
        info = mod.Model().info.remote()
    assert info["loaded_in"] == info["pid"]  # a normal cold start
    assert "network sockets open before the snapshot" in (platform.state_dir / "server.log").read_text()


# --- snapshots and templates of containers with their own file system view ----------------------------

VOLUME_APP = textwrap.dedent('''
    import os
    import time

    import modal

    app = modal.App("snap-volume")
    vol = modal.Volume.from_name("snap-volume-weights", create_if_missing=True)
    LOG = os.environ["SNAP_TEST_LOG"]


    @app.cls(enable_memory_snapshot=True, volumes={"/weights": vol}, min_containers=2, max_containers=2,
             env={"SNAP_TEST_LOG": LOG})
    class Model:
        @modal.enter(snap=True)
        def load(self):
            with open(LOG, "a") as f:
                f.write(f"snap {int(os.environ.get('HOMEPORT_HOST_PID') or os.getpid())}\\n")
            with open("/weights/w.txt") as f:  # read from the volume before the snapshot
                self.weights = f.read()
            self.loaded_in = int(os.environ.get('HOMEPORT_HOST_PID') or os.getpid())

        @modal.method()
        def info(self, delay=0.0):
            time.sleep(delay)
            return {"pid": int(os.environ.get('HOMEPORT_HOST_PID') or os.getpid()), "loaded_in": self.loaded_in, "weights": self.weights,
                    "listing": os.listdir("/weights")}


    @app.function(volumes={"/weights": vol}, env={"SNAP_TEST_LOG": LOG})
    def listing():
        return os.listdir("/weights")
''')


def _timelines(function, app):
    """The start-up timelines of `app`'s containers of `function` (not those of other apps' functions
    of the same name, which may still be exiting)."""
    import json

    from homeport.testing import homeport_cli

    out = homeport_cli("container", "list", "--json")
    return [r["timeline"] for r in json.loads(out.stdout) if r["function"] == function and r["app_id"] == app.app_id]


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="volumes need bubblewrap (apt-get install bubblewrap)")
def test_containers_with_a_volume_start_from_the_snapshot_and_the_template(platform, tmp_path, monkeypatch):
    log = tmp_path / "log"
    monkeypatch.setenv("SNAP_TEST_LOG", str(log))
    weights = tmp_path / "w.txt"
    weights.write_text("weights on the volume")
    import modal

    with modal.Volume.from_name("snap-volume-weights", create_if_missing=True).batch_upload(force=True) as batch:
        batch.put_file(weights, "/w.txt")
    (tmp_path / "snapvol.py").write_text(VOLUME_APP)
    sys.path.insert(0, str(tmp_path))
    try:
        mod = importlib.import_module("snapvol")
    finally:
        sys.path.remove(str(tmp_path))
    with mod.app.run(show_logs=False):
        seen = {}
        deadline = time.monotonic() + 60
        while len(seen) < 2 and time.monotonic() < deadline:
            for info in mod.Model().info.map([0.3] * 4):
                seen[info["pid"]] = info
        assert mod.listing.remote() == ["w.txt"]
        plain = _timelines("listing", mod.app)
    infos = list(seen.values())
    assert len(infos) == 2
    assert len(_lines(log, "snap")) == 1  # one snapshot, taken with the volume mounted
    assert all(i["weights"] == "weights on the volume" and i["listing"] == ["w.txt"] for i in infos)
    assert all(i["loaded_in"] != i["pid"] for i in infos)  # copies of the snapshot
    assert plain and all("fork" in t for t in plain)  # a function with a volume is forked from its template


HELPER_APP = textwrap.dedent('''
    import os

    import modal

    import snaphelper_mod

    app = modal.App("snap-helper")
    LOG = os.environ["SNAP_TEST_LOG"]


    @app.cls(enable_memory_snapshot=True, env={"SNAP_TEST_LOG": LOG})
    class Model:
        @modal.enter(snap=True)
        def load(self):
            with open(LOG, "a") as f:
                f.write(f"snap {int(os.environ.get('HOMEPORT_HOST_PID') or os.getpid())}\\n")
            self.value = snaphelper_mod.VALUE

        @modal.method()
        def value_seen(self):
            return self.value
''')


def test_a_changed_local_module_the_app_imports_makes_a_new_snapshot(platform, tmp_path, monkeypatch):
    log = tmp_path / "log"
    monkeypatch.setenv("SNAP_TEST_LOG", str(log))
    helper = tmp_path / "snaphelper_mod.py"
    helper.write_text("VALUE = 'v1'\n")
    (tmp_path / "snaphelper_app.py").write_text(HELPER_APP)
    sys.path.insert(0, str(tmp_path))
    try:
        mod = importlib.import_module("snaphelper_app")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("snaphelper_mod", None)
    with mod.app.run(show_logs=False):
        assert mod.Model().value_seen.remote() == "v1"
    with mod.app.run(show_logs=False):
        assert mod.Model().value_seen.remote() == "v1"
    assert len(_lines(log, "snap")) == 1  # nothing changed: the same snapshot
    helper.write_text("VALUE = 'v2, edited'\n")  # the app's own module file is unchanged
    with mod.app.run(show_logs=False):
        assert mod.Model().value_seen.remote() == "v2, edited"
    assert len(_lines(log, "snap")) == 2


PRINT_APP = textwrap.dedent('''
    import threading
    import time

    import modal

    app = modal.App("snap-print-{suffix}")


    @app.cls(enable_memory_snapshot=True, min_containers=2, max_containers=2)
    class Model:
        @modal.enter(snap=True)
        def load(self):
            print("PRINTED-IN-SNAP-HOOK", flush=True)
            if {fail}:  # a thread: the snapshot is refused, and the containers start without it
                threading.Thread(target=time.sleep, args=(30,), daemon=True).start()

        @modal.method()
        def ok(self, delay=0.0):
            time.sleep(delay)
            return True
''')


def _run_printing(tmp_path, name, capfd, fail):
    from homeport.testing import wait_for

    (tmp_path / f"{name}.py").write_text(PRINT_APP.format(suffix=name, fail=fail))
    sys.path.insert(0, str(tmp_path))
    try:
        mod = importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))
    seen = {"out": "", "err": ""}

    def read(what):
        out, err = capfd.readouterr()
        seen["out"] += out
        seen["err"] += err
        return what in seen["out"] + seen["err"]

    with mod.app.run(show_logs=True):
        assert all(mod.Model().ok.map([0.3] * 4))
        wait_for(lambda: read("[snapshot] PRINTED-IN-SNAP-HOOK"), timeout=10)
    read("")
    return seen


def test_what_the_snapshot_prints_reaches_the_apps_log(platform, tmp_path, capfd):
    seen = _run_printing(tmp_path, "snapprint_ok", capfd, fail=False)
    assert "[snapshot] PRINTED-IN-SNAP-HOOK" in seen["out"]  # tagged: printed while taking the snapshot
    assert seen["out"].count("PRINTED-IN-SNAP-HOOK") == 1  # once, not per container


def test_a_failed_snapshot_shows_its_traceback_and_why_once(platform, tmp_path, capfd):
    seen = _run_printing(tmp_path, "snapprint_fail", capfd, fail=True)
    assert "[snapshot] PRINTED-IN-SNAP-HOOK" in seen["out"]
    assert "[snapshot] Traceback" in seen["err"] and "threads started before the snapshot" in seen["err"]
    # Both containers started without it; the app is told why once.
    assert seen["err"].count("homeport: starting without the memory snapshot") == 1


# --- what a snapshot is taken from: the image and the class's parameters ----------------------------------------

PARAM_APP = textwrap.dedent('''
    import os

    import modal

    app = modal.App("snap-inputs")
    LOG = os.environ["SNAP_TEST_LOG"]
    image = modal.Image.debian_slim().env({"SNAP_FLAVOUR": os.environ["SNAP_FLAVOUR"]})


    @app.cls(enable_memory_snapshot=True, image=image, env={"SNAP_TEST_LOG": LOG})
    class Model:
        size: int = modal.parameter(default=1)

        @modal.enter(snap=True)
        def load(self):
            with open(LOG, "a") as f:
                f.write(f"snap {self.size} {os.environ['SNAP_FLAVOUR']} {int(os.environ.get('HOMEPORT_HOST_PID') or os.getpid())}\\n")
            self.loaded = [self.size, os.environ["SNAP_FLAVOUR"], int(os.environ.get('HOMEPORT_HOST_PID') or os.getpid())]

        @modal.method()
        def info(self):
            return {"loaded": self.loaded, "pid": int(os.environ.get('HOMEPORT_HOST_PID') or os.getpid())}
''')


def _snaps(log):
    """(size, flavour) of each snapshot taken, in order."""
    return [(int(size), flavour) for kind, size, flavour, _pid in map(str.split, log.read_text().splitlines())
            if kind == "snap"] if log.exists() else []


def _import_param_app(tmp_path, flavour, monkeypatch):
    """(Re)import the same, unchanged module file with the image it defines at import time."""
    monkeypatch.setenv("SNAP_FLAVOUR", flavour)
    path = tmp_path / "snapinputs.py"
    if not path.exists():
        path.write_text(PARAM_APP)
    sys.path.insert(0, str(tmp_path))
    try:
        sys.modules.pop("snapinputs", None)
        return importlib.import_module("snapinputs")
    finally:
        sys.path.remove(str(tmp_path))


def test_a_snapshot_is_taken_per_parameter_set_and_reused_for_the_same_one(platform, tmp_path, monkeypatch):
    log = tmp_path / "log"
    monkeypatch.setenv("SNAP_TEST_LOG", str(log))
    mod = _import_param_app(tmp_path, "vanilla", monkeypatch)
    with mod.app.run(show_logs=False):
        one = mod.Model(size=1).info.remote()
        two = mod.Model(size=2).info.remote()
        assert mod.Model(size=1).info.remote()["loaded"] == one["loaded"]  # the same parameters: the same snapshot
    assert one["loaded"][:2] == [1, "vanilla"] and two["loaded"][:2] == [2, "vanilla"]
    assert one["loaded"][2] != one["pid"] and two["loaded"][2] != two["pid"]  # both from a snapshot
    assert _snaps(log) == [(1, "vanilla"), (2, "vanilla")]  # a changed parameter: a snapshot of its own
    with mod.app.run(show_logs=False):  # and in a new run of the same app, the ones already taken
        assert mod.Model(size=2).info.remote()["loaded"] == two["loaded"]
    assert _snaps(log) == [(1, "vanilla"), (2, "vanilla")]


def test_a_changed_image_makes_a_new_snapshot(platform, tmp_path, monkeypatch):
    log = tmp_path / "log"
    monkeypatch.setenv("SNAP_TEST_LOG", str(log))
    mod = _import_param_app(tmp_path, "vanilla", monkeypatch)
    with mod.app.run(show_logs=False):
        first = mod.Model().info.remote()
    with mod.app.run(show_logs=False):
        assert mod.Model().info.remote()["loaded"] == first["loaded"]  # unchanged: the same snapshot
    mod = _import_param_app(tmp_path, "chocolate", monkeypatch)  # the same code, another image
    with mod.app.run(show_logs=False):
        changed = mod.Model().info.remote()
    assert changed["loaded"][:2] == [1, "chocolate"] and changed["loaded"][2] != first["loaded"][2]
    assert _snaps(log) == [(1, "vanilla"), (1, "chocolate")]
