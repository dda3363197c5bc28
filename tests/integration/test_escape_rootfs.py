"""A container of an image with its own root file system (`apt_install`/`run_commands`) is a boundary
too. Such a container used to run as real host root in a chroot, seeing the host's processes: user
code could climb out of the chroot, or go through `/proc/<host pid>/root`, and read the installation's
token or write the host. Now it is an unprivileged host user of its own (root only in its user
namespace), in a PID namespace of its own, in a root assembled by pivot_root; its image stays its own
to write, as in Modal. A web container of such an image writes only its own web socket directory.

These run real containers of `apps/escape_rootfs.py`, forked from the image's template (the default)
and started afresh (`HOMEPORT_TEMPLATES=0`; `web_server` replicas always are).
"""

import importlib.util
import os
import uuid
from pathlib import Path

import pytest

from homeport import _modal_alias
from homeport.testing import Platform

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SOURCE_TREE = Path(__file__).resolve().parents[2] / "src" / "homeport"


def _rootfs_missing():
    from homeport.image_builder.rootfs import DebianBase, missing

    return None if DebianBase().ready and missing() is None else missing()


needs_rootfs = pytest.mark.skipif(_rootfs_missing() is not None or os.geteuid() != 0,
                                  reason=f"needs root and root file system images ({_rootfs_missing()})")


def _load(apps_path: str, name: str):
    """A copy of the app module of its own (each test has its own control plane)."""
    _modal_alias.install()
    spec = importlib.util.spec_from_file_location(name, os.path.join(apps_path, "escape_rootfs.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_rootfs
@pytest.mark.parametrize("templates", ["1", "0"])
def test_a_root_file_system_container_is_not_host_root(tmp_path, apps_path, monkeypatch, templates):
    monkeypatch.setenv("HOMEPORT_TEMPLATES", templates)
    other = Path("/tmp") / f"hp-other-install-{uuid.uuid4().hex[:8]}"  # another installation's state
    other.mkdir(mode=0o700)
    (other / "token").write_text("someone else's token")
    escaped = [f"/etc/hp-escaped-{uuid.uuid4().hex[:6]}", str(SOURCE_TREE / f"hp-escaped-{uuid.uuid4().hex[:6]}.py")]
    try:
        with Platform(str(tmp_path / "p")) as p:
            escape = _load(apps_path, f"escape_rootfs_{templates}")
            targets = {"write": escaped, "read": [str(p.state_dir / "token"), str(p.state_dir / "secret.key"),
                                                  str(other / "token")],
                       "pids": [os.getpid(), p.pid]}
            with escape.app.run(show_logs=False):
                seen = escape.look.remote(targets)
                snap = escape.Snapshotted().look.remote(targets) if templates == "1" else None
    finally:
        (other / "token").unlink()
        other.rmdir()
    # A user namespace of its own, in which it is root, mapped to an unprivileged host user.
    inside, outside, count = seen["uid_map"][:3]
    assert (inside, count) == ("0", "1") and outside != "0", seen["uid_map"]
    # Its own processes only.
    assert 1 in seen["pids"] and len(seen["pids"]) < 10, seen["pids"]
    assert all(v != "done" for v in seen["environ"].values()), seen["environ"]
    assert all(v != "done" for v in seen["through_proc"].values()), seen["through_proc"]
    # Neither from where it is nor out of a chroot does it reach the host's files.
    for attempt in (seen, seen["chroot"]):
        for path, result in attempt["reads"].items():
            assert result != "done", (path, attempt)
        for path, result in attempt["writes"].items():
            assert result != "done" or path.startswith("/etc/"), (path, attempt)  # its own /etc is its image's
    for path in escaped:
        assert not os.path.exists(path), path
    if snap is not None:  # a snapshot's hook would have run as host root: its containers start afresh
        assert snap["snap_uid_map"][:3] == ["0", snap["snap_uid_map"][1], "1"] and snap["snap_uid_map"][1] != "0"
        assert snap["uid_map"][1] != "0" and len(snap["pids"]) < 10, snap
        assert all(r != "done" for r in (*snap["reads"].values(), *snap["chroot"]["reads"].values())), snap
    # Its image is still its own: read, and written anywhere (the writes vanish with it).
    assert seen["marker"] == "from the image"
    assert seen["image_write"] == "done" and seen["image_append"] == "done" and seen["shadow"] == "done", seen


@needs_rootfs
def test_a_root_file_system_web_container_cannot_take_over_another_containers_socket(tmp_path, apps_path):
    """Of the web socket directory the gateway shares with every web container, one of an image's own
    root sees only its own entry: another's socket is neither in view nor replaceable."""
    import httpx

    with Platform(str(tmp_path / "p")) as p:
        web = _load(apps_path, "escape_rootfs_web")
        with web.app.run(show_logs=False):
            assert httpx.get(web.victim.web_url, timeout=120).text == "victim"  # its socket exists now
            seen = httpx.get(web.attacker.web_url + "/results.json", timeout=120).json()
            assert httpx.get(web.victim.web_url, timeout=60).text == "victim"  # still the victim's
            shared = sorted(os.listdir(p.state_dir / "web"))
    assert seen["own"] == "done", seen
    assert seen["entries"] == [seen["cid"]] and not seen["others"], seen  # no other container's socket in view
    assert len(shared) >= 2 and "hp-planted" not in shared and "ta-000000000000" not in shared, shared
    assert seen["uid_map"][:3] == ["0", seen["uid_map"][1], "1"] and seen["uid_map"][1] != "0", seen
    assert len(seen["pids"]) < 10, seen["pids"]
