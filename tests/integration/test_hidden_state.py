"""A container cannot read the control plane's state directory (the installation's
token, the key to every secret and the database it decrypts, other volumes, other containers' scratch
directories, the server's log), although it runs as the same OS user; it still reaches what it needs.
"""

import importlib.util
import os

import pytest

from homeport.testing import Platform

pytestmark = pytest.mark.integration

SECRET_FILES = ("token", "secret.key", "state.db", "state.db-wal", "server.log")
SENTINEL = "hp-someone-elses"  # a directory beside the containers' own, on the host


@pytest.fixture(scope="module")
def hidden(platform, apps_path):
    import hidden_state

    for name in ("containers", "volumes"):  # what another app's container or volume would leave there
        os.makedirs(platform.state_dir / name / SENTINEL, exist_ok=True)
    return hidden_state


def assert_hidden(seen, state_dir, contained=True):
    for name in SECRET_FILES:
        assert os.path.exists(state_dir / name) or name == "state.db-wal"
        assert seen[name] in ("FileNotFoundError", "PermissionError"), (name, seen[name])
    assert seen["volumes"] in ("FileNotFoundError", "PermissionError")
    if isinstance(seen["containers"], list):  # its own scratch directory only: the path to it, nothing beside it
        assert SENTINEL not in seen["containers"] and len(seen["containers"]) <= 1, seen["containers"]
    assert seen["image_writable"] is False  # nor can it change the image environments, shared with other apps
    assert seen["token_in_environ"] is False
    if contained:  # in a user namespace of its own: it cannot look into a process outside
        assert seen["through_proc"] == [], seen["through_proc"]


def assert_working(seen):
    assert seen["secret"] == "its-own-secret"
    assert seen["tmpdir_writable"] is True
    assert seen["called"] == "through the socket"


def test_a_forked_container_sees_none_of_it(platform, hidden):
    with hidden.app.run(show_logs=False):
        seen = hidden.plain.remote()
    assert_hidden(seen, platform.state_dir)
    assert_working(seen)
    assert seen["tmpdir"].startswith(str(platform.state_dir / "containers"))


def test_a_container_with_a_volume_sees_only_its_volume(platform, hidden):
    with hidden.app.run(show_logs=False):
        seen = hidden.with_volume.remote("kept")
    assert_hidden(seen, platform.state_dir)
    assert_working(seen)
    assert seen["volume"] == "kept"
    assert b"".join(hidden.volume.read_file("note.txt")) == b"kept"


def test_a_snapshot_hides_it_from_its_snap_hooks_too(platform, hidden):
    with hidden.app.run(show_logs=False):
        seen = hidden.Snapshot().seen.remote()
    assert_hidden(seen["snap"], platform.state_dir)  # in the template itself, before any container
    assert_hidden(seen["container"], platform.state_dir)
    assert seen["snap"]["secret"] == "its-own-secret"
    assert seen["called"] == "through the socket"


def _rootfs_missing():
    from homeport.image_builder.rootfs import DebianBase, missing

    return None if DebianBase().ready and missing() is None else missing()


@pytest.mark.timeout(900)  # the first run on a machine makes the Debian base (about 30 s, from Debian's mirror)
@pytest.mark.skipif(_rootfs_missing() is not None, reason=f"no root file system images here: {_rootfs_missing()}")
def test_a_container_in_a_root_file_system_image_sees_none_of_it(platform, hidden):
    with hidden.rootfs_app.run(show_logs=False):
        seen = hidden.in_rootfs.remote()
    assert seen["debian"] is True
    # Its root holds only what is bound into it. It runs as the control plane's user, in no user
    # namespace of its own when that is root (/proc would then show it the host's view: not asserted).
    assert_hidden(seen, platform.state_dir, contained=os.geteuid() != 0)
    assert seen["secret"] == "its-own-secret" and seen["tmpdir_writable"] is True


def test_spawned_containers_see_none_of_it(tmp_path, apps_path, monkeypatch):
    """Without templates (HOMEPORT_TEMPLATES=0) containers start as fresh processes, under bubblewrap."""
    monkeypatch.setenv("HOMEPORT_TEMPLATES", "0")
    with Platform(str(tmp_path / "p")) as p:
        monkeypatch.setenv("HIDE_TEST_STATE", str(p.state_dir))
        # A copy of the app module of its own, whose STATE is this platform's (the other tests' is not).
        spec = importlib.util.spec_from_file_location("hidden_state_spawned", os.path.join(apps_path, "hidden_state.py"))
        hidden_state = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(hidden_state)
        os.makedirs(p.state_dir / "containers" / SENTINEL)
        with hidden_state.app.run(show_logs=False):
            plain = hidden_state.plain.remote()
            with_volume = hidden_state.with_volume.remote("spawned")
    for seen in (plain, with_volume):
        assert_hidden(seen, p.state_dir)
        assert_working(seen)
    assert with_volume["volume"] == "spawned"


HIDE_SCRIPT = """
import ctypes, json, os, sys
from homeport.runtime import _hide

state, plan = sys.argv[1], json.loads(sys.argv[2])
try:
    _hide.own_namespace()
except OSError as exc:
    print(json.dumps({"unavailable": str(exc)}))
    raise SystemExit
_hide.hide(plan)
_hide.lock()
libc = ctypes.CDLL(None, use_errno=True)

def errno_of(rc):
    return 0 if rc == 0 else ctypes.get_errno()

def writes(path):
    try:
        with open(path, "w") as f:
            f.write("x")
        return True
    except OSError:
        return False

print(json.dumps({
    "listing": sorted(os.listdir(state)),
    "containers": sorted(os.listdir(os.path.join(state, "containers"))),
    "images": os.listdir(os.path.join(state, "images")),
    "image_writable": writes(os.path.join(state, "images", "env", "x")),
    "own_writable": writes(os.path.join(state, "containers", "mine", "x")),
    "umount": errno_of(libc.umount2(state.encode(), 2)),
    "mount": errno_of(libc.mount(b"none", state.encode(), b"tmpfs", 0, None)),
    "uid": os.getuid(),
}))
"""


def test_hide_keeps_only_what_it_is_told_and_cannot_be_undone(tmp_path):
    """The runtime's own mechanism, in a fresh process: what a forked container does before user code."""
    import json
    import subprocess
    import sys

    state = tmp_path / "state"
    for d in ("images/env", "containers/mine", f"containers/{SENTINEL}", "volumes/other"):
        (state / d).mkdir(parents=True)
    (state / "token").write_text("secret")
    plan = {"dir": str(state), "keep": [[str(state / "images"), True], [str(state / "containers" / "mine"), False]]}
    out = subprocess.run([sys.executable, "-c", HIDE_SCRIPT, str(state), json.dumps(plan)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    if "unavailable" in seen:
        pytest.skip(f"no mount namespaces here: {seen['unavailable']}")
    assert seen["listing"] == ["containers", "images"] and seen["containers"] == ["mine"]
    assert seen["images"] == ["env"] and seen["image_writable"] is False
    assert seen["own_writable"] is True and (state / "containers" / "mine" / "x").read_text() == "x"
    assert seen["umount"] != 0 and seen["mount"] != 0  # its view cannot be changed back
    assert seen["uid"] == os.getuid()  # the same user, mapped to itself
