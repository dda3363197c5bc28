"""A machine without mount namespaces is told so clearly, before any root file system step runs."""

import asyncio
import os
import stat

import pytest

from homeport.image_builder import rootfs


def _tool(path, script):
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.fixture
def tools(tmp_path, monkeypatch):
    """Every tool present, as root; `unshare` is a script the test writes."""
    calls = tmp_path / "calls"
    found = {"unshare": str(tmp_path / "unshare")}
    monkeypatch.setattr(rootfs, "_which", lambda name: found.get(name, "/bin/true"))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(rootfs, "_probed", {})

    def unshare(script):
        _tool(tmp_path / "unshare", f"echo call >> {calls}\n{script}")

    unshare.calls = lambda: len(calls.read_text().splitlines()) if calls.exists() else 0
    return unshare


def test_a_machine_without_mount_namespaces_gets_a_clear_message(tools):
    tools('echo "unshare: unshare failed: Operation not permitted" >&2\nexit 1')
    problem = rootfs.missing()
    assert problem is not None and problem.startswith("mount namespaces do not work here")
    assert "Operation not permitted" in problem and "--privileged" in problem
    assert rootfs.missing() == problem and tools.calls() == 1  # tried once, remembered


def test_a_cached_debian_base_is_not_used_where_namespaces_fail(tools, tmp_path):
    tools("exit 1")
    base = rootfs.DebianBase(root=tmp_path / "cache")
    base.path.mkdir(parents=True)
    (base.path / ".homeport-base-ok").write_text(base.name)
    with pytest.raises(rootfs.RootfsUnavailable, match="mount namespaces do not work here"):
        asyncio.run(base.ensure(None, lambda line, fd: None))


def test_working_namespaces_are_not_a_problem(tools):
    tools('[ "$1" = "--mount" ] || exit 2\nexit 0')  # what the probe runs: unshare --mount ... -- /bin/sh -c :
    assert rootfs.missing() is None
