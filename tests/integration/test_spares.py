"""Spare copies: a template's copy forked ahead of demand and already in a cgroup of its own takes a
cold container; each still gets its own process, cgroup, user and limits, and never two containers
one spare; spares leave with the control plane, cgroups and all.

The programs say `import modal` (tests/integration/apps/spares.py); what the containers report about
themselves is checked here, and the host's view of the cgroups where the control plane makes them.
"""

import asyncio
import os
import socket
import sys
import time
from pathlib import Path

import psutil
import pytest

from homeport import _protocol as P
from homeport.backends._base import ContainerSpec, TemplateSpec
from homeport.backends.local import LocalBackend, _spares
from homeport.backends.local._cgroups import ROOT, Cgroups, CgroupsUnavailable
from homeport.testing import Platform, wait_for

pytestmark = pytest.mark.integration

RUNTIME = (sys.executable, "-m", "homeport.runtime")


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


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def _placed_spare(templates, key: str):
    tpl = templates._templates[key]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        placed = [s for s in tpl.spares.values() if s.cgroup is not None]
        if placed:
            return tpl, placed[0]
        await asyncio.sleep(0.05)
    raise AssertionError("no spare was placed")


async def _until(check, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:  # noqa: ASYNC110 - processes leave, no event says so
        await asyncio.sleep(0.05)
    return check()


@needs_spares
@pytest.mark.parametrize("how", ["swept", "retired"])
def test_a_spare_leaves_with_its_template(tmp_path, how):
    """A template stopped for being unused (swept), or retired while a container of it still runs (a
    snapshot gone stale): its spare is killed and its cgroup removed; the running container is not."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMEPORT_")}
    template = TemplateSpec(key=f"rt-spare-{how}", argv=RUNTIME, env=env, ttl=0)
    silent = tmp_path / "silent.sock"  # accepts (the kernel's backlog) and never answers
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(silent))
    listener.listen(8)

    async def scenario():
        backend = LocalBackend(scratch_dir=str(scratch))
        try:
            await backend.prepare(template)
            templates = backend._templates
            tpl, spare = await _placed_spare(templates, template.key)
            dirs = list(spare.cgroup.dirs)
            assert all(d.is_dir() for d in dirs)
            container = None
            if how == "swept":
                templates.sweep(time.monotonic() + 3600)
            else:  # a container taken from the spare runs on (waiting for a control plane that never answers) ...
                spec = ContainerSpec(container_id="ta-spare-retire", app_id="ap-1", function_tag="f", argv=RUNTIME,
                                     env={**env, P.ENV_SERVER_ADDRESS: str(silent), P.ENV_CONTAINER_ID: "ta-spare-retire"},
                                     template=template)
                pid = await backend.start(spec, lambda *_: None, lambda *_: None)
                assert pid == spare.pid  # it took the spare
                tpl, spare = await _placed_spare(templates, template.key)  # ... and the template made another
                dirs = list(spare.cgroup.dirs)
                container = pid
                templates._stop(tpl)  # retired: it forks no more
            assert await _until(lambda: _gone(spare.pid)), "the spare outlived its template"
            assert await _until(lambda: not any(d.exists() for d in dirs)), dirs
            if container is not None:
                assert not _gone(container)  # retiring a template does not stop its containers
        finally:
            await backend.close(1)
            listener.close()

    asyncio.run(scenario())
