"""The control plane's dashboard and Prometheus endpoint, served over HTTP beside the gateway.

`homeport dashboard` asks the control plane for a login link (`/login?token=...`); the link sets an
HttpOnly, SameSite=Strict cookie holding the dashboard token, so the pages and their live updates are
authenticated and another site cannot drive them. `/metrics` takes the same cookie or
`Authorization: Bearer <token>` (Prometheus' `authorization` setting). The token lives in
`<state dir>/dashboard.token` (0600): whoever can read it can already read the installation's state.

Every asset is served from the package (no CDN), so it works offline. Pages are updated live from one
server-sent-event stream: a snapshot of apps and containers once a second, finished calls and log lines
as they happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import uvicorn

from ..observe import Observer
from . import views
from .app import build_app
from .views import ControlPlaneReads

log = logging.getLogger("homeport.server.dashboard")

ENV_DASHBOARD_HOST = "HOMEPORT_DASHBOARD_HOST"  # default 127.0.0.1
ENV_DASHBOARD_PORT = "HOMEPORT_DASHBOARD_PORT"  # default: the port it had last time if free, else any
PRUNE_EVERY = 600  # seconds between history retention passes


def load_or_create_token(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        token = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token)
        return token


class Dashboard:
    """The dashboard's server: it reads the control plane through `reads` (its read model), keeps its
    figures in `observer`, and runs its tasks with `spawn` (the control plane's, which cancels them)."""

    def __init__(self, reads: ControlPlaneReads, observer: Observer,
                 spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task], state_dir: Path) -> None:
        self.reads = reads
        self.observer = observer
        self._spawn = spawn
        self.token = load_or_create_token(state_dir / "dashboard.token")
        self._port_file = state_dir / "dashboard.port"
        self.host = os.environ.get(ENV_DASHBOARD_HOST, "127.0.0.1")
        self.port: int | None = None
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def info(self) -> dict[str, str]:
        return {"url": self.url, "login_url": f"{self.url}/login?token={self.token}"}

    async def start(self) -> None:
        sock = None
        for port in self._candidate_ports():
            sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((self.host, port))
                break
            except OSError:
                sock.close()
                sock = None
        assert sock is not None
        self.port = sock.getsockname()[1]
        with contextlib.suppress(OSError):
            self._port_file.write_text(str(self.port))
        config = uvicorn.Config(build_app(self.reads, self.observer, self.token), log_config=None, access_log=False, lifespan="off",
                                http="httptools", ws="none", timeout_graceful_shutdown=1)
        self._server = server = _EmbeddedServer(config)
        self._task = self._spawn(server.serve(sockets=[sock]))
        self._spawn(self._fold())
        log.info("dashboard at %s", self.url)

    def _candidate_ports(self) -> list[int]:
        if os.environ.get(ENV_DASHBOARD_PORT):
            return [int(os.environ[ENV_DASHBOARD_PORT])]
        try:
            return [int(self._port_file.read_text()), 0]
        except (OSError, ValueError):
            return [0]

    async def _fold(self) -> None:
        """Once a second: metrics and history folded in, pool sizes sampled; now and then, retention."""
        ticks = 0
        while True:
            await asyncio.sleep(1.0)
            try:
                self.observer.flush(views.pool_sizes(self.reads))
                ticks += 1
                if ticks % PRUNE_EVERY == 1:
                    self.observer.prune()
            except Exception:
                log.exception("folding the dashboard's figures failed")

    async def close(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._task, 3)
        with contextlib.suppress(Exception):
            self.observer.flush()


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside the control plane's loop: the control plane owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield

    def install_signal_handlers(self) -> None:
        pass
