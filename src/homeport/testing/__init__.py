"""Test helpers for users and for Homeport's own suite: a private control plane per test session.

```python
from homeport.testing import Platform

with Platform() as platform:      # own state dir, own control plane, stopped and checked on exit
    with app.run():
        assert f.remote(2) == 4
```
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from .. import _config, _launcher
from .. import _protocol as P


class Platform:
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
        self.start()
        return self

    def start(self) -> int:
        self.pid = _launcher.start_server(quiet=True) or int(_config.pid_path().read_text())
        return self.pid

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
        try:
            current = int((self.state_dir / "server.pid").read_text())
        except (OSError, ValueError):
            current = None
        procs: list[psutil.Process] = []
        for pid in dict.fromkeys(p for p in (self.pid, current) if p):
            try:
                proc = psutil.Process(pid)
                if pid != self.pid and "homeport.server" not in " ".join(proc.cmdline()):
                    continue  # a stale pid file naming some other process
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

