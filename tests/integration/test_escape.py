"""A container is a boundary. User code that tries to reach the host from inside its
container fails: it is not host root, it cannot write the host's files, it sees no host process, a
daemon it leaves behind dies with it, and a fork bomb stops at its process limit.

These run real containers (forked from templates, the default path) of `apps/escape_host.py`.
"""

import contextlib
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
        targets = {"write": ["/etc/hp-escaped", str(SOURCE_TREE / "hp-escaped.py"), str(p.state_dir / "hp-escaped")],
                   "read": [str(p.state_dir / "token"), str(p.state_dir / "secret.key")],
                   "pids": [os.getpid(), p.pid]}
        with escape.app.run(show_logs=False):
            server = p.pid
            seen = escape.look.remote(targets)
            host = _host_view(_container_process(seen["cid"]).pid) if os.geteuid() == 0 else None
    if host is not None:  # the same user namespace as a forked container's: root in it is not host root
        assert host["uid"] != "0" and host["uid_map"][:3] == ["0", host["uid"], "1"], host
    for path in targets["write"]:
        assert seen["writes"][path] != "written" and not os.path.exists(path), path
    for path in targets["read"]:
        assert seen["reads"][path] != "read", path
    assert seen["slash_tmp"] == "written" and not os.path.exists(seen["slash_tmp_name"])  # a /tmp of its own
    assert len(seen["pids"]) < 10, seen["pids"]
    assert not any("-m pytest" in c or "homeport.server" in c for c in seen["cmdlines"]), seen["cmdlines"]
    for pid in (os.getpid(), server):
        assert seen["environ"][pid] != "read" and seen["signal"][pid] != "reached"


@pytest.mark.skipif(os.geteuid() != 0, reason="containers keep the control plane's user when it is not root")
def test_containers_are_host_users_of_their_own(platform, escape):
    """Two containers at once are two host users: neither can signal, trace or read the other's
    private files as the same user."""
    with escape.app.run(show_logs=False):
        calls = [escape.whoami.spawn(3), escape.whoami.spawn(3)]
        seen = [c.get(timeout=120) for c in calls]
    assert seen[0]["cid"] != seen[1]["cid"], seen  # two containers
    users = {s["uid_map"][1] for s in seen}
    assert len(users) == 2 and "0" not in users, seen


@pytest.mark.skipif(os.geteuid() != 0, reason="containers keep the control plane's user when it is not root")
def test_a_container_holds_no_handle_on_another_users_namespace(platform, escape):
    """The template keeps the user namespace of each container user it has made (so that the next
    container of that user starts sooner): a container holds none of them, not even its own (a handle on
    the namespace of another container's user would be a way to act as that user)."""
    with escape.app.run(show_logs=False):
        calls = [escape.whoami.spawn(3), escape.whoami.spawn(3)]
        seen = [c.get(timeout=120) for c in calls]
        seen.append(escape.whoami.remote(0))  # a later one, forked while the template holds several
    assert len({s["uid_map"][1] for s in seen[:2]}) == 2, seen
    assert [s["namespaces"] for s in seen] == [[], [], []], seen


def _container_process(cid: str) -> psutil.Process:
    """The runtime process of container `cid`, as the host sees it."""
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if (proc.info["cmdline"] or [])[1:3] == ["-m", "homeport.runtime"] and \
                    proc.environ().get("HOMEPORT_CONTAINER_ID") == cid:
                return proc
    raise AssertionError(f"no process of container {cid}")


def _host_view(pid: int) -> dict[str, str]:
    """What the host says of one of its processes: its user ids and its user namespace's map."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"uid": status["Uid"].split()[1], "uid_map": Path(f"/proc/{pid}/uid_map").read_text().split()}


def test_a_container_forked_from_a_memory_snapshot_is_as_isolated(platform, escape, bait):
    """The snapshot template runs the user's snap hooks: it isolates itself first (an unprivileged host
    user, root only in a user namespace of its own; a PID namespace of its own; the host read-only and
    the state directory hidden), and each container forked from it inherits that."""
    targets = {
        "write": ["/etc/hp-escaped", str(SOURCE_TREE / "hp-escaped.py"), str(platform.state_dir / "hp-escaped")],
        "read": [bait["other_token"], str(platform.state_dir / "token"), "/root/.bash_history", "/etc/shadow"],
        "pids": [os.getpid(), platform.pid],
    }
    with Logs() as logs, escape.app.run(show_logs=False):
        seen = escape.Snapshotted().look.remote(targets)
        assert seen["host_pid"] and 1 in seen["pids"], seen["pids"]  # process 1 of a PID namespace of its own
        host = _host_view(seen["host_pid"]) if os.geteuid() == 0 else None  # while the container runs
    if host is not None:  # as the host sees the container: not root, and root in its namespace is not host root
        assert host["uid"] != "0" and host["uid_map"][1] != "0", host
    assert "keep the control plane's user" not in logs.text()
    for path in targets["write"][:2]:
        assert seen["writes"][path] != "written", path
    for path in targets["write"]:  # the state directory in its view is an empty one of its own (in its /tmp here)
        assert not os.path.exists(path), path
    assert seen["snap_etc"] != "written" and not os.path.exists("/etc/hp-escaped-snap")
    for path in targets["read"]:
        assert seen["reads"][path] != "read", (path, seen["reads"][path])
    for pid in (os.getpid(), platform.pid):
        assert seen["environ"][pid] != "read" and seen["signal"][pid] != "reached"
    # No host process in view: neither the container's nor the snap hook's (which ran in the template).
    for pids, cmdlines in ((seen["pids"], seen["cmdlines"]), (seen["snap_pids"], seen["snap_cmdlines"])):
        assert len(pids) < 10, pids
        assert not any("-m pytest" in c or "homeport.server" in c for c in cmdlines), cmdlines
    assert seen["tmp"] == "written" and seen["slash_tmp"] == "written" and seen["home_write"] == "written"


def _long_state_dir(tmp_path: Path) -> str:
    """A state directory whose path is too long for web sockets under it (about 100 bytes for a socket
    address): the control plane puts them in a directory of its own under /tmp."""
    base = str(tmp_path)
    return base + "/" + "s" * max(1, 86 - len(base) - 1)


@pytest.mark.parametrize("isolation,long_path", [("1", False), ("0", False), ("1", True), ("0", True)])
def test_a_web_container_cannot_take_over_another_containers_socket(tmp_path, apps_path, monkeypatch, isolation,
                                                                    long_path):
    """Web containers share a directory of sockets with the gateway: each may write only its own
    directory there. The attacker is a `web_server` (spawned, not forked): as isolated as the rest.
    With the namespaces off (HOMEPORT_ISOLATION=0) the state directory is still hidden, and this holds;
    so it does where the state directory's path is too long and the sockets are under /tmp."""
    import httpx

    monkeypatch.setenv("HOMEPORT_ISOLATION", isolation)
    with Platform(_long_state_dir(tmp_path) if long_path else str(tmp_path / "p")):
        _modal_alias.install()
        spec = importlib.util.spec_from_file_location("escape_web", os.path.join(apps_path, "escape_web.py"))
        web = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(web)
        with web.app.run(show_logs=False):
            assert httpx.get(web.victim.web_url, timeout=60).json() == "victim"  # its socket exists now
            seen = httpx.get(web.attacker.web_url + "/results.json", timeout=60).json()
            host = _host_view(_container_process(seen["cid"]).pid) if os.geteuid() == 0 else None
            assert httpx.get(web.victim.web_url, timeout=60).json() == "victim"  # still the victim's
    assert seen["own"] == "done", seen
    assert seen["plant"] != "done" and seen["mkdir"] != "done", seen
    assert seen["others"], seen  # the victim's directory was there to attack
    for entry, tried in seen["others"].items():
        assert all(result != "done" for result in tried.values()), (entry, tried)
    if host is not None and isolation == "1":
        assert host["uid"] != "0" and host["uid_map"][1] != "0", host
        assert len(seen["pids"]) < 10, seen["pids"]


@pytest.mark.skipif(os.geteuid() != 0, reason="runs a control plane as another user, which takes root")
def test_a_snapshot_of_a_control_plane_that_is_not_root_sees_no_host_process(apps_path):
    """A control plane that is not root cannot make its containers other users, but a template (a
    memory snapshot's, the runtime's) still becomes process 1 of a PID namespace of its own (owned by
    the user namespace it makes), so snap hooks and containers see no host process. Run as user 65534 (nobody), in a mount
    namespace where the interpreter under /root is in its reach."""
    import json
    import subprocess
    import sys

    home = Path("/tmp") / f"hp-nonroot-{uuid.uuid4().hex[:8]}"
    home.mkdir(mode=0o700)
    os.chown(home, 65534, 65534)
    prefix = os.path.realpath(sys.base_prefix)  # the interpreter (under /root here: 0700)
    script = (f'mkdir -p {home}/.interp && mount --bind {prefix} {home}/.interp && '
              f'mount -t tmpfs -o mode=0755 hp-root /root && mkdir -p {prefix} && mount --bind {home}/.interp {prefix} && '
              f'exec setpriv --reuid=65534 --regid=65534 --clear-groups env HOME={home} "$@"')
    program = Path(__file__).parent / "programs" / "nonroot_snapshot.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMEPORT_")}
    try:
        out = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                              sys.executable, str(program), str(home / "state"), apps_path],
                             capture_output=True, text=True, timeout=240, env=env)
    finally:
        subprocess.run(["rm", "-rf", str(home)], check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["uid_map"][1] == "65534", seen["uid_map"]  # the control plane's user, as before
    assert seen["host_pid"] and 1 in seen["pids"], seen["pids"]  # process 1 of a PID namespace of its own
    plain = seen["plain"]  # and a container forked from the runtime's template: the same
    for pids, cmdlines in ((seen["pids"], seen["cmdlines"]), (seen["snap_pids"], seen["snap_cmdlines"]),
                           (plain["pids"], plain["cmdlines"])):
        assert len(pids) < 10, pids
        assert not any("homeport.server" in c or "nonroot_snapshot" in c for c in cmdlines), cmdlines
    for pid in seen["test_pids"]:
        assert seen["environ"][str(pid)] != "read" and seen["signal"][str(pid)] != "reached"
    assert seen["reads"][next(iter(seen["reads"]))] != "read"  # the token: the state directory is hidden


def test_a_container_cannot_name_the_state_directory_as_the_runtime(platform, escape):
    """The runtime's packages stay in every container's view: a class variant's secret or a sandbox's
    environment that named the state directory as them kept its token and secret key in view. No other
    name only the platform sets is taken from a user's environment either."""
    with escape.app.run(show_logs=False):
        seen = escape.runtime_path_attack.remote(str(platform.state_dir))
    assert seen["variant"]["runtime_path"] != str(platform.state_dir), seen
    for path, how in seen["variant"]["reads"].items():
        assert how != "read", (path, seen)
    # Nor any other name only the platform sets: none is the attacker's value (a non-web function has no
    # socket directory at all).
    for name, value in seen["variant"]["platform_env"].items():
        assert value is None or platform.state_dir.as_posix() not in value, (name, seen)
    assert seen["variant"]["platform_env"]["HOMEPORT_WEB_SOCKET"] is None, seen
    assert " read\n" not in seen["sandbox"], seen
    assert seen["sandbox"].split("env ")[-1].strip() != str(platform.state_dir), seen
    assert seen["sandbox"].count("\n") == 3, seen  # it ran: two attempts and its environment
