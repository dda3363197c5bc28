"""Spare copies: a template's copy forked ahead of demand and already in a cgroup of its own takes a
cold container; each still gets its own process, cgroup, user and limits, and never two containers
one spare; spares leave with the control plane, cgroups and all.

The programs say `import modal` (tests/integration/apps/spares.py); what the containers report about
themselves is checked here, and the host's view of the cgroups where the control plane makes them.
"""

import os
import time
from pathlib import Path

import psutil
import pytest

from homeport.backends.local import _spares
from homeport.backends.local._cgroups import ROOT, Cgroups, CgroupsUnavailable
from homeport.testing import Platform, wait_for

pytestmark = pytest.mark.integration


def _no_spares() -> str | None:
    if not _spares.enabled():
        return "spares are made only by a control plane that is root, with HOMEPORT_SPARES not 0"
    try:
        Cgroups().create(f"homeport-test-probe-{os.getpid()}", None, None).remove()
    except CgroupsUnavailable as exc:
        return str(exc)
    return None


needs_spares = pytest.mark.skipif(_no_spares() is not None, reason=f"no spares here: {_no_spares()}")


def _cgroup(who: dict) -> str:
    """The container's process-limit cgroup (v1 `pids`, or the v2 one)."""
    return who["cgroups"].get("pids") or who["cgroups"]["unified"]


def _spare_named(who: dict) -> bool:
    return os.path.basename(_cgroup(who)).startswith("homeport-spare-")


def _own_user(who: dict) -> bool:
    """Root in a user namespace of its own, mapped to a host user that is not root."""
    return who["uid_map"][0] == "0" and who["uid_map"][1] != "0"


def _cold(call, runs: int, app) -> list[dict]:
    out = []
    for _ in range(runs):  # each run of the app starts a container of its own, cold
        with app.run(show_logs=False):
            out.append(call())
        time.sleep(0.3)  # the template makes its next spare meanwhile
    return out


@needs_spares
def test_cold_containers_from_spares_are_each_their_own(platform, apps_path):
    import spares

    seen = _cold(lambda: spares.who.remote(), 5, spares.app)
    assert len({w["cid"] for w in seen}) == 5
    assert len({w["pid"] for w in seen}) == 5  # a spare serves one container
    assert len({_cgroup(w) for w in seen}) == 5, [_cgroup(w) for w in seen]
    assert any(_spare_named(w) for w in seen), [_cgroup(w) for w in seen]  # they came from spares
    for w in seen:
        assert w["pgid"] == w["pid"] or w["pgid"] == 1  # its own process group (1: its own PID namespace)
        if os.geteuid() == 0:
            assert _own_user(w), w["uid_map"]


@needs_spares
def test_a_burst_of_cold_starts_never_shares_a_spare(platform, apps_path):
    import spares

    with spares.app.run(show_logs=False):
        seen = list(spares.slow_who.map([1.0] * 12))
    by_cid: dict[str, set] = {}
    for w in seen:
        by_cid.setdefault(w["cid"], set()).add((w["pid"], _cgroup(w), tuple(w["uid_map"])))
    assert len(by_cid) >= 2, "the map did not scale out"
    assert all(len(v) == 1 for v in by_cid.values()), by_cid  # one process, cgroup and user per container
    identities = [next(iter(v)) for v in by_cid.values()]
    for i in range(3):  # distinct processes, cgroups and users between containers that ran together
        assert len({ident[i] for ident in identities}) == len(identities), identities


@needs_spares
def test_a_limited_container_takes_no_spare_and_keeps_its_limit(platform, apps_path):
    import spares

    with spares.app.run(show_logs=False):
        spares.who.remote()  # its template makes a spare
        time.sleep(0.5)
        w = spares.limited_who.remote()
        assert not _spare_named(w)
        assert os.path.basename(_cgroup(w)) == f"homeport-{w['cid']}"
        memory = w["cgroups"].get("memory") or w["cgroups"].get("unified")
        limit_file = (ROOT / "memory" / memory.lstrip("/") / "memory.limit_in_bytes"
                      if "memory" in w["cgroups"] else ROOT / memory.lstrip("/") / "memory.max")
        assert int(limit_file.read_text()) == 300 << 20  # the container is still running (warm)


@needs_spares
def test_memory_snapshot_containers_come_from_spares(platform, apps_path):
    import spares

    seen = _cold(lambda: spares.Snap().who.remote(), 4, spares.app)
    assert [w["state"] for w in seen] == [8 << 20] * 4  # the snapshot's state, in each
    assert len({w["pid"] for w in seen}) == 4
    assert len({_cgroup(w) for w in seen}) == 4
    assert any(_spare_named(w) for w in seen), [_cgroup(w) for w in seen]
    if os.geteuid() == 0:
        assert all(_own_user(w) for w in seen), [w["uid_map"] for w in seen]


def _spare_cgroups(server_pid: int) -> list[Path]:
    own = {}
    for line in Path(f"/proc/{server_pid}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        own[ctrls or "unified"] = path
    parent = ROOT / "pids" / own["pids"].lstrip("/") if "pids" in own else ROOT / own["unified"].lstrip("/")
    return sorted(parent.glob(f"homeport-spare-{server_pid}-*"))


@needs_spares
def test_a_spare_does_not_outlive_the_control_plane(tmp_path, apps_path):
    import spares

    with Platform(str(tmp_path / "p")) as p:
        with spares.app.run(show_logs=False):
            spares.who.remote()
        assert wait_for(lambda: any((d / "cgroup.procs").read_text().split() for d in _spare_cgroups(p.pid)),
                        timeout=30), "no spare was placed"
        server_pid = p.pid
        dirs = _spare_cgroups(server_pid)
        members = [psutil.Process(int(pid)) for d in dirs for pid in (d / "cgroup.procs").read_text().split()]
        assert members
    _gone, alive = psutil.wait_procs(members, timeout=15)
    for proc in alive:
        proc.kill()
    assert not alive, alive
    assert not any(d.exists() for d in dirs), dirs
