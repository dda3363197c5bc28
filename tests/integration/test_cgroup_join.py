"""A limited container is in its cgroup before it runs anything, forked or spawned.

These drive the local backend directly with a recording stand-in for the kernel's cgroups, so they
say exactly *when* a container was placed, on any machine. The kernel's own enforcement is tested in
`test_resources.py`.
"""

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from homeport.backends import ContainerSpec, TemplateSpec
from homeport.backends.local._backend import LocalBackend
from homeport.backends.local._cgroups import Cgroup, CgroupsUnavailable

pytestmark = pytest.mark.integration

RUNTIME = (sys.executable, "-m", "homeport.runtime")


class _RecordingCgroup(Cgroup):
    """A cgroup whose `cgroup.procs` is a plain file; `add` records what the placed process was doing."""

    def __init__(self, root: Path) -> None:
        root.mkdir()
        (root / "cgroup.procs").write_text("")
        super().__init__([root], 2)
        self.added: list[tuple[int, int]] = []  # (pid, its session id when it was placed)

    def add(self, pid: int) -> None:
        # Give an unheld copy ample time to run ahead (its first act is `setsid`). No assertion is on
        # this time: a held copy cannot move however long it waits, and the test checks that it did not.
        time.sleep(0.2)
        self.added.append((pid, os.getsid(pid)))
        super().add(pid)

    def oom_killed(self) -> bool:
        return False

    def remove(self) -> None:
        pass


class _Cgroups:
    def __init__(self, cgroup: _RecordingCgroup) -> None:
        self.cgroup = cgroup

    def create(self, name, memory_limit_mib, cpu_limit):
        if name.startswith("homeport-spare-"):  # a template's spare copy (`_spares`) stays unplaced: unused
            raise CgroupsUnavailable("not in this test")
        return self.cgroup

    def prepare_move(self):
        pass


def _run(tmp_path, spec_kwargs):
    """Start one limited container on a fresh backend and wait for it to exit; (pid, cgroup, output)."""
    cgroup = _RecordingCgroup(tmp_path / "cg")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    output: list[bytes] = []

    async def scenario():
        backend = LocalBackend(scratch_dir=str(scratch))
        backend._cgroups = _Cgroups(cgroup)
        exited = asyncio.get_running_loop().create_future()
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOMEPORT_")}
        spec = ContainerSpec(container_id="ta-limited", app_id="ap-1", function_tag="f", argv=RUNTIME, env=env,
                             memory_limit_mib=100, **spec_kwargs(env))
        try:
            pid = await backend.start(spec, lambda _cid, _fd, line: output.append(line),
                                      lambda _cid, info: exited.done() or exited.set_result(info))
            await asyncio.wait_for(exited, 60)
        finally:
            await backend.close(1)
        return pid

    pid = asyncio.run(scenario())
    return pid, cgroup, b"".join(output).decode(errors="replace")


def test_a_forked_container_waits_until_it_is_in_its_cgroup(tmp_path):
    pid, cgroup, output = _run(tmp_path, lambda env: {"template": TemplateSpec(key="rt-cgroup-test", argv=RUNTIME,
                                                                               env=env)})
    assert [p for p, _ in cgroup.added] == [pid]
    (_pid, session), = cgroup.added
    # Its first act once released is to start a session of its own: still in the template's, it had
    # not run a line of its own yet when it was placed.
    assert session != pid
    assert (tmp_path / "cg" / "cgroup.procs").read_text().strip() == str(pid)
    assert output, "the container never ran after it was placed"  # the runtime ran (and failed: no server)
    assert "NOT enforced" not in output


def test_a_spawned_container_joins_its_cgroup_before_it_runs(tmp_path):
    pid, cgroup, output = _run(tmp_path, lambda env: {})
    assert cgroup.added == []  # not placed from outside, after the fact...
    assert (tmp_path / "cg" / "cgroup.procs").read_text().strip() == str(pid)  # ...it joined before its exec
    assert "NOT enforced" not in output
