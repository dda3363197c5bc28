"""A container that asks for a network of its own (a `web_server`) is told, through
`ENV_PRIVATE_NETWORK`, whether the local backend really gave it one, and starts either way."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys

import pytest

from homeport import _protocol as P
from homeport.backends import ContainerSpec
from homeport.backends.local import _sandbox
from homeport.backends.local._backend import LocalBackend

# What the container reports: the flag it got, and whether its network namespace is not the host's.
REPORT = ("import os; print(os.environ.get('HOMEPORT_PRIVATE_NETWORK'), "
          f"os.readlink('/proc/self/ns/net') != {os.readlink('/proc/self/ns/net')!r})")


def _spec(cid: str = "ta-1", **kw) -> ContainerSpec:
    # The control plane's own environment may carry the flag (a test run inside a container): a spec's does not.
    return ContainerSpec(container_id=cid, app_id="ap-1", function_tag="own", argv=(sys.executable, "-c", REPORT),
                         env={"PATH": os.environ["PATH"]}, private_network=True, **kw)


def _run(backend: LocalBackend, spec: ContainerSpec) -> tuple[list[str], list[str]]:
    """Start the container, wait for it to exit; its stdout and stderr lines."""
    out: dict[int, list[str]] = {1: [], 2: []}

    async def go() -> None:
        done = asyncio.get_running_loop().create_future()
        await backend.start(spec, lambda cid, fd, line: out[fd].append(line.decode()),
                            lambda cid, info: done.done() or done.set_result(info))
        info = await asyncio.wait_for(done, 60)
        assert info.returncode == 0, out
        await backend.close(5)

    asyncio.run(go())
    return out[1], out[2]


@pytest.fixture
def broken_bwrap(tmp_path, monkeypatch):
    """A bubblewrap that cannot make namespaces (a kernel without unprivileged user namespaces)."""
    fake = tmp_path / "bwrap"
    fake.write_text(f"#!/bin/sh\necho call >> {tmp_path}/calls\n"
                    "echo 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(_sandbox.shutil, "which", lambda name: str(fake) if name == "bwrap" else shutil.which(name))
    return tmp_path / "calls"


def test_a_bubblewrap_that_cannot_make_a_network_is_found_out_once_and_the_container_still_starts(broken_bwrap):
    backend = LocalBackend()
    for cid in ("ta-1", "ta-2"):
        stdout, stderr = _run(backend, _spec(cid))
        assert stdout == ["None False\n"]  # the machine's network, and the runtime is told so
        note = "".join(stderr)
        assert "no network of its own (bubblewrap fails here: bwrap: No permissions" in note
        assert "apt-get install bubblewrap" in note
    assert broken_bwrap.read_text().count("call") == 1  # probed once, not once per container


def test_without_bubblewrap_the_flag_is_not_set(monkeypatch):
    monkeypatch.setattr(_sandbox.shutil, "which", lambda name: None if name == "bwrap" else shutil.which(name))
    stdout, stderr = _run(LocalBackend(), _spec())
    assert stdout == ["None False\n"] and "(bubblewrap is not installed)" in "".join(stderr)


def _bwrap_makes_networks() -> bool:
    bwrap = shutil.which("bwrap")
    return bwrap is not None and subprocess.run([bwrap, "--dev-bind", "/", "/", "--unshare-net", "true"],
                                                capture_output=True).returncode == 0


@pytest.mark.skipif(not _bwrap_makes_networks(), reason="bubblewrap cannot make network namespaces here")
def test_a_container_given_its_own_network_is_told_so():
    stdout, stderr = _run(LocalBackend(), _spec())
    assert stdout == ["1 True\n"] and not stderr
    stdout, _ = _run(LocalBackend(), ContainerSpec(container_id="ta-2", app_id="ap-1", function_tag="f",
                                                   argv=(sys.executable, "-c", REPORT),
                                                   env={P.ENV_PRIVATE_NETWORK: "1"}))
    assert stdout == ["None False\n"]  # not asked for: whatever the environment claimed is not kept
