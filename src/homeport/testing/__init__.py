"""Test helpers for users and for Homeport's own suite: a private control plane per test session.

```python
from homeport.testing import Platform

with Platform() as platform:      # own state dir, own control plane, stopped and checked on exit
    with app.run():
        assert f.remote(2) == 4
```

With pytest, one running app for all the tests of a module (`platform` is a fixture that holds a
`Platform`, and `apps/my_app.py` sits next to the test module):

```python
from homeport.testing import app_fixture

my_app = app_fixture("my_app")

def test_double(my_app):
    assert my_app.f.remote(2) == 4
```
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import psutil

from .. import _config, _launcher
from .. import _protocol as P


class Platform:
    held: ClassVar[list[Platform]] = []
    """The Platforms inside their `with` block now: what they run is theirs to stop (and check), not a
    leftover of whatever runs while they are held."""

    def __init__(self, state_dir: str | None = None) -> None:
        self._own_dir = state_dir is None
        # Short path: it holds a Unix socket, whose path may not exceed ~100 bytes.
        self.state_dir = Path(state_dir or tempfile.mkdtemp(prefix="hp-", dir="/tmp"))
        self._saved_env: dict[str, str | None] = {}
        self.pid: int | None = None

    def __enter__(self) -> Platform:
        for key in (P.ENV_STATE_DIR, P.ENV_SERVER_ADDRESS):
            self._saved_env[key] = os.environ.get(key)
        os.environ[P.ENV_STATE_DIR] = str(self.state_dir)
        os.environ.pop(P.ENV_SERVER_ADDRESS, None)
        Platform.held.append(self)
        try:
            self.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def start(self) -> int:
        self.pid = _launcher.start_server(quiet=True) or int(_config.pid_path().read_text())
        return self.pid

    def _servers(self) -> list[psutil.Process]:
        """The control plane this Platform started and the one the state directory's pid file names (a
        client may have started another after the first stopped)."""
        try:
            current = int((self.state_dir / "server.pid").read_text())
        except (OSError, ValueError):
            current = None
        found = []
        for pid in dict.fromkeys(p for p in (self.pid, current) if p):
            try:
                proc = psutil.Process(pid)
                if pid != self.pid and "homeport.server" not in " ".join(proc.cmdline()):
                    continue  # a stale pid file naming some other process
                found.append(proc)
            except psutil.NoSuchProcess:
                pass
        return found

    def processes(self) -> list[psutil.Process]:
        """Every control plane of this state directory (see `_servers`) and every process they started."""
        found = []
        for proc in self._servers():
            try:
                found += [proc, *proc.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        return found

    def server_processes(self) -> list[psutil.Process]:
        """The control plane and every process it started (containers and their children)."""
        if self.pid is None:
            return []
        try:
            proc = psutil.Process(self.pid)
            return [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the control plane by pid and wait until it and all its containers are gone.

        The pid file is read too: if a client started another control plane in this state directory
        after the first one stopped, that one is stopped as well.
        """
        procs: list[psutil.Process] = []
        for proc in self._servers():
            try:
                procs += [proc, *proc.children(recursive=True)]
                proc.terminate()
            except psutil.NoSuchProcess:
                pass
        _gone, alive = psutil.wait_procs(procs, timeout=timeout)
        for p in alive:
            p.kill()
        self.pid = None
        if alive:
            raise RuntimeError(f"processes left after the control plane stopped: {[p.pid for p in alive]}")

    def restart(self) -> int:
        self.stop()
        return self.start()

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            if self in Platform.held:
                Platform.held.remove(self)
            for key, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            if self._own_dir:
                shutil.rmtree(self.state_dir, ignore_errors=True)


def homeport_cli(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """Run the `homeport` CLI of this interpreter in a subprocess, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "homeport.cli", *args], capture_output=True, text=True, timeout=timeout, **kwargs
    )


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class Logs:
    """Collect the container output the control plane streams to this client, for assertions.

    ```python
    with app.run(show_logs=False), Logs() as logs:
        f.remote()
    assert "hello" in logs.text("f")
    ```
    """

    def __enter__(self) -> Logs:
        from .._bridge import run_sync
        from .._client import get_client

        self.client = run_sync(get_client())
        self.saved = self.client.log_handler
        self.lines: list[tuple[str, str]] = []
        self.client.log_handler = lambda msg: self.lines.append((msg["fn"], msg["data"]))
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.log_handler = self.saved

    def text(self, fn: str | None = None) -> str:
        """What the containers of function `fn` (all functions: None) printed so far."""
        return "".join(data for f, data in list(self.lines) if fn is None or f == fn)


@contextlib.contextmanager
def running(module: str, *apps: str, path: str | os.PathLike[str] | None = None) -> Iterator[ModuleType]:
    """Import the app module `module` (found in directory `path`, if given) and keep its apps running
    around the block: `module.app`, or the module attributes named in `apps`. Yields the module.

    Each app runs as in `with app.run(show_logs=False):`, stopped (its containers' exit hooks run) on
    leaving the block, last started first.
    """
    added = path is not None and str(path) not in sys.path
    if added:
        sys.path.insert(0, str(path))
    try:
        mod = importlib.import_module(module)
    finally:
        if added:
            sys.path.remove(str(path))
    with contextlib.ExitStack() as stack:
        for name in apps or ("app",):
            stack.enter_context(getattr(mod, name).run(show_logs=False))
        yield mod


def app_fixture(module: str, *apps: str, directory: str = "apps", platform: str = "platform",
                scope: str = "module") -> Any:
    """A pytest fixture that keeps the app module `module` running (see `running`) for the tests of a
    module (`scope`), on the control plane of the fixture named `platform`. The module is looked up in
    `directory`, relative to the test module's own directory. Assign it to the name the tests use:
    `my_app = app_fixture("my_app")`.
    """
    import pytest

    def fixture(request: pytest.FixtureRequest) -> Iterator[ModuleType]:
        request.getfixturevalue(platform)
        with running(module, *apps, path=request.path.parent / directory) as mod:
            yield mod

    fixture.__name__ = module
    return pytest.fixture(scope=scope)(fixture)  # type: ignore[call-overload]


def machine_address() -> str | None:
    """This machine's own address on a network interface other than loopback (traffic to it stays
    here), or None where it has none."""
    import socket

    import psutil

    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return a.address
    return None
