"""Containers forked from one memory snapshot are a boundary between one another, and the snapshot's
own user code (its snap hooks, run in the template) cannot reach their web sockets: each copy runs as
a host user of its own, and the web sockets' directory is read-only in the template's view, each copy
getting its own entry writable from the control plane (`homeport.runtime._copyusers`).

These run real containers of `apps/escape_snapshot.py`.
"""

import importlib.util
import os
import shutil
import uuid
from pathlib import Path

import pytest

from homeport import _modal_alias
from homeport.testing import Platform

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="containers keep the control plane's user when it is not root")]


@pytest.fixture()  # each test its own control plane: a snapshot template of an earlier test ran its hooks then
def snap(apps_path):
    # A state directory short enough for the web sockets to lie in it (`<state>/web`), where the snap
    # hooks look for them.
    state = Path("/tmp") / f"hp-snapuid-{uuid.uuid4().hex[:8]}"
    try:
        with Platform(str(state)):
            _modal_alias.install()  # `import modal` in the app, as under `homeport run`
            spec = importlib.util.spec_from_file_location("escape_snapshot", os.path.join(apps_path, "escape_snapshot.py"))
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            yield module, state
    finally:
        shutil.rmtree(state, ignore_errors=True)


def _failed(attacks: dict) -> None:
    assert attacks["exists"] and attacks["entries"], attacks  # there was a directory, and a victim, to attack
    for what in ("plant", "mkdir", "bind"):
        assert attacks[what] != "done", (what, attacks)
    for entry, tried in attacks["others"].items():
        assert all(result != "done" for result in tried.values()), (entry, tried)


def test_containers_forked_from_one_snapshot_are_host_users_of_their_own(snap):
    """Two containers of one memory snapshot at once are two host users (not the snapshot's), and each
    still writes its own temporary directory (made by the control plane, mounted for its user)."""
    module, _state = snap
    with module.app.run(show_logs=False):
        calls = [module.Snapped().whoami.spawn(4), module.Snapped().whoami.spawn(4)]
        seen = [c.get(timeout=120) for c in calls]
    assert seen[0]["cid"] != seen[1]["cid"], seen  # two containers
    users = {s["uid_map"][1] for s in seen}
    assert len(users) == 2 and not users & {"0", "65534"}, seen
    for s in seen:
        assert s["uid_map"][0] == "0" and s["uid_map"][2] == "1", s
        assert s["tmp"] == s["cid"], s


def test_snap_hooks_cannot_touch_the_web_sockets(snap):
    """A snap hook runs before any container, in the template: it can neither create nor replace nor
    remove anything in the directory of web sockets, another container's entry included; and a web
    endpoint of a memory snapshot still serves through the gateway, as a user of its own."""
    import httpx

    module, state = snap
    with module.app.run(show_logs=False):
        assert httpx.get(module.victim.web_url, timeout=60).json() == "victim"  # its socket exists now
        attacks = module.Snapped().snap_attacks.remote()
        served = httpx.get(module.SnapWeb().hello.web_url, timeout=60).json()
        assert httpx.get(module.victim.web_url, timeout=60).json() == "victim"  # still the victim's
    assert attacks["dir"] == str(state / "web"), attacks
    _failed(attacks)
    _failed(served["snap"])
    assert served["uid_map"][0] == "0" and served["uid_map"][1] not in ("0", "65534"), served
    assert not (state / "web" / "hp-planted").exists() and not (state / "web" / "hp-sock").exists()
