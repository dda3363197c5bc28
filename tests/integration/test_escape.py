"""A container is a boundary. User code that tries to reach the host from inside its
container fails: it is not host root, it cannot write the host's files, it sees no host process, a
daemon it leaves behind dies with it, and a fork bomb stops at its process limit.

These run real containers (forked from templates, the default path) of `apps/escape_host.py`.
"""

import importlib.util
import os
import uuid
from pathlib import Path

import psutil
import pytest

from homeport import _modal_alias
from homeport.testing import Logs, Platform, wait_for

pytestmark = pytest.mark.integration

SOURCE_TREE = Path(__file__).resolve().parents[2] / "src" / "homeport"


@pytest.fixture(scope="module")
def escape(platform, apps_path):
    _modal_alias.install()  # `import modal` in the app, as under `homeport run`

    import escape_host as escape

    return escape


@pytest.fixture()
def bait(tmp_path):
    """Files of the host that a container must not read: in /root, and in another installation's
    state directory under /tmp."""
    other = Path("/tmp") / f"hp-other-install-{uuid.uuid4().hex[:8]}"
    other.mkdir(mode=0o700)
    (other / "token").write_text("someone else's token")
    yield {"other_token": str(other / "token")}
    for f in other.iterdir():
        f.unlink()
    other.rmdir()


def test_the_container_is_not_host_root_and_cannot_write_the_host(platform, escape, bait):
    targets = {
        "write": ["/etc/hp-escaped", str(SOURCE_TREE / "hp-escaped.py"), "/usr/hp-escaped", "/var/tmp/hp-escaped",
                  str(platform.state_dir / "hp-escaped")],
        "read": [bait["other_token"], str(platform.state_dir / "token"), "/root/.bash_history", "/etc/shadow"],
        "pids": [os.getpid(), platform.pid],
    }
    with escape.app.run(show_logs=False):
        seen = escape.look.remote(targets)
    # A user namespace of its own, in which it is root, mapped to an unprivileged host user.
    inside, outside, count = seen["uid_map"][:3]
    if os.geteuid() == 0:
        assert (inside, count) == ("0", "1") and outside != "0", seen["uid_map"]
    else:
        assert outside == str(os.geteuid()), seen["uid_map"]
    for path in targets["write"]:
        assert seen["writes"][path] != "written", path
        assert not os.path.exists(path), path
    for path in targets["read"]:
        assert seen["reads"][path] != "read", (path, seen["reads"][path])
    # Its own files still work: its TMPDIR, a private /tmp and home (/root, as in Modal: not the host's).
    assert seen["tmp"] == "written" and seen["slash_tmp"] == "written" and seen["home_write"] == "written"
    mine = seen["slash_tmp_name"]
    assert not os.path.exists(mine) and not os.path.exists(os.path.join(seen["home"], os.path.basename(mine)))
    assert not any(name.startswith("hp-other-install-") for name in seen["slash_tmp_listing"])


def test_the_container_sees_no_host_process(platform, escape):
    with escape.app.run(show_logs=False):
        seen = escape.look.remote({"write": [], "read": [], "pids": [os.getpid(), platform.pid]})
    # Its own PID namespace: process 1 is the container; the test and the control plane are not there.
    assert 1 in seen["pids"]
    assert os.getpid() not in seen["pids"] or "pytest" not in " ".join(seen["cmdlines"])
    assert not any("-m pytest" in c or "homeport.server" in c for c in seen["cmdlines"]), \
        seen["cmdlines"]
    assert len(seen["pids"]) < 10, seen["pids"]
    for pid in (os.getpid(), platform.pid):
        assert seen["environ"][pid] != "read"
        assert seen["signal"][pid] != "reached"


def test_a_volume_is_still_writable_by_its_container(platform, escape):
    with escape.app.run(show_logs=False):
        seen = escape.on_volume.remote("note")
    assert seen["read"] == "note"
    assert b"".join(escape.volume.read_file("note")) == b"note"
    # ... and is as isolated as any other (its template runs in the view with the volume).
    if os.geteuid() == 0:
        assert seen["uid_map"][:1] == ["0"] and seen["uid_map"][1] != "0", seen["uid_map"]
    assert seen["etc"] != "written" and seen["pids"] < 10


def _daemons(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if any(marker in part for part in p.info["cmdline"] or ()):
            found.append(p)
    return found


def test_a_setsid_daemon_does_not_outlive_its_app(platform, escape):
    marker = f"hp-daemon-{uuid.uuid4().hex[:8]}"
    with escape.app.run(show_logs=False):
        escape.daemon.remote(marker)
        assert wait_for(lambda: _daemons(marker), timeout=10)  # it runs, outside the container's group
        daemon = _daemons(marker)[0]
        # Orphaned (its parent exited): the container's process 1 adopted it, or the host's init where
        # the container has no PID namespace; in a session of its own, out of the container's group.
        container = int(daemon.environ().get("HOMEPORT_HOST_PID") or 0)
        assert daemon.ppid() in (1, container), (daemon.ppid(), container)
        if container:
            assert os.getsid(daemon.pid) != os.getsid(container)
    # `app stop` (the end of `app.run`) stops the container, and everything it started with it.
    assert wait_for(lambda: not _daemons(marker), timeout=30), [p.pid for p in _daemons(marker)]


def test_a_fork_bomb_stops_at_the_process_limit(tmp_path, apps_path, monkeypatch):
    monkeypatch.setenv("HOMEPORT_CONTAINER_PIDS_MAX", "64")
    with Platform(str(tmp_path / "p")) as p:
        _modal_alias.install()
        # A copy of the app module of its own: the session's copy is bound to the session's control plane.
        spec = importlib.util.spec_from_file_location("escape_bomb", os.path.join(apps_path, "escape_host.py"))
        escape = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(escape)
        with Logs() as logs, escape.app.run(show_logs=False):
            out = escape.fork_bomb.remote(500)
            # The backend looks at the container's cgroup every second, and tells the app's log.
            assert wait_for(lambda: "reached its limit of 64 processes" in logs.text(), timeout=10), logs.text()
        assert p.server_processes()  # the control plane is unharmed
    assert out["started"] < 64, out
    assert out["error"] and "Resource temporarily unavailable" in out["error"], out


def test_a_spawned_container_sees_no_host_process_either(tmp_path, apps_path, monkeypatch):
    """Without templates (HOMEPORT_TEMPLATES=0; a `web_server` replica) a container starts under
    bubblewrap, in a PID namespace of its own too."""
    monkeypatch.setenv("HOMEPORT_TEMPLATES", "0")
    with Platform(str(tmp_path / "p")) as p:
        _modal_alias.install()
        spec = importlib.util.spec_from_file_location("escape_spawned", os.path.join(apps_path, "escape_host.py"))
        escape = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(escape)
        with escape.app.run(show_logs=False):
            server = p.pid
            seen = escape.look.remote({"write": ["/etc/hp-escaped"], "read": [], "pids": [os.getpid(), server]})
    if os.path.exists(seen["slash_tmp_name"]):  # its /tmp is the host's (the README says so): not asserted
        os.unlink(seen["slash_tmp_name"])
    assert seen["writes"]["/etc/hp-escaped"] != "written" and not os.path.exists("/etc/hp-escaped")
    assert len(seen["pids"]) < 10, seen["pids"]
    assert not any("-m pytest" in c or "homeport.server" in c for c in seen["cmdlines"]), seen["cmdlines"]
    for pid in (os.getpid(), server):
        assert seen["environ"][pid] != "read" and seen["signal"][pid] != "reached"
