"""`python -m homeport.server`: run the control plane in the foreground until SIGTERM or a shutdown call."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from .. import _address, _config
from .. import _protocol as P
from .._wire import new_event_loop
from ..backends import Mount, PrivateDir, create_backend
from .api import serve, serve_tcp
from .dashboard import Dashboard
from .dictqueue import DictQueueStore
from .secrets import Cipher, SecretStore, load_or_create_key
from .services import ControlPlane, web_socket_dir
from .state import State
from .volumes import VolumeStore
from .web import WebEndpoints

log = logging.getLogger("homeport.server")


def _socket_in_use(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
    except OSError:
        return False
    finally:
        s.close()
    return True


def _private_dir(state_dir: Path, address: Path, web_dir: str) -> PrivateDir:
    """The state directory as containers see it: empty but for the control plane's socket, the image
    environments (read-only: one app's container must not change another's packages) and the web
    endpoints' sockets (`web_dir`, under /tmp where the state directory's path is too long for a socket
    address: kept all the same, each container writing only its own entry there). Their own scratch
    directory the backend adds; their volumes they see mounted."""
    keep = (Mount(str(address), str(address)), Mount(str(state_dir / "images"), str(state_dir / "images"), True),
            Mount(web_dir, web_dir))
    return PrivateDir(str(state_dir), keep)


async def run(state_dir: Path, backend_name: str) -> None:
    address = _config.server_address()
    if address.exists():
        if _socket_in_use(address):
            raise SystemExit(f"a control plane is already listening on {address}")
        address.unlink()
    token = _config.load_or_create_token()
    scratch = state_dir / "containers"
    scratch.mkdir(exist_ok=True)
    state = State(state_dir / "state.db")
    stale = state.stop_running_apps()
    if stale:
        log.info("marked %d apps of a previous control plane as stopped", stale)
    web_dir = web_socket_dir(str(state_dir))
    backend = create_backend(backend_name, scratch_dir=str(scratch), private=_private_dir(state_dir, address, web_dir))
    cipher = Cipher(load_or_create_key(state_dir / "secret.key"))
    state.cipher = cipher  # deployments hold function environments (secret values): encrypted at rest
    cp = ControlPlane(state, backend, token, str(address), str(scratch), web_dir=web_dir)
    cp.secrets = SecretStore(state.db, cipher)
    volumes, cp.volumes_unshared = volume_root(state_dir, backend)
    cp.volumes = VolumeStore(state.db, volumes)
    cp.dictqueue = DictQueueStore(state.db)
    cp.web = WebEndpoints(cp.registry, cp.executor, cp.observer, state.db)
    tcp_server = await _listen_tcp(cp, backend)
    # Deployed apps first (their web endpoints listen again), so that once clients can connect the
    # installation is as it was; their containers start once the socket they connect to exists.
    await cp.app_service.restore_deployed()
    # The dashboard first: from the moment the socket listens, clients find the pid file and the dashboard
    # (nothing awaits between `serve` and writing the pid).
    cp.dashboard = Dashboard(cp.dashboard_reads, cp.observer, cp.spawn, state_dir)
    await cp.dashboard.start()
    server = await serve(cp, str(address))
    cp.serving.set()
    os.chmod(address, 0o600)
    _config.pid_path().write_text(str(os.getpid()))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, cp.shutdown_requested.set)
    ticker = cp.spawn(cp.run_ticker())
    cp.launcher.prepare_default_template()
    # What exists now (modules, FastAPI's models, the restored apps) lives as long as the process: out of
    # the collector's sight, a full collection during a big map scans only what calls allocate (about
    # 57k objects fewer: ~50 ms of event loop per full collection on a loaded 2-core machine).
    gc.freeze()
    log.info("control plane %d listening on %s (backend %s)", os.getpid(), address, backend_name)
    print(f"homeport control plane listening on {address}", flush=True)
    try:
        await cp.shutdown_requested.wait()
    finally:
        log.info("shutting down")
        server.close()
        if tcp_server is not None:
            tcp_server.close()
        ticker.cancel()
        await cp.dashboard.close()
        await cp.close()
        state.close()
        with contextlib.suppress(FileNotFoundError):
            address.unlink()
        with contextlib.suppress(FileNotFoundError):
            _config.pid_path().unlink()
        log.info("stopped")


def volume_root(state_dir: Path, backend) -> tuple[Path, str | None]:
    """Where volumes live, and why they cannot be used (None: they can). On one machine: the state
    directory. With containers on other machines too, a directory every node sees at the same path
    (HOMEPORT_SHARED_ROOT); without one, volumes are refused, saying so. The shared directory must be
    inside the state directory, which containers see empty: a container sees only its own volumes."""
    shared = os.environ.get(P.ENV_SHARED_ROOT)
    if shared:
        root = Path(shared).expanduser().resolve()
        if not root.is_dir():
            raise SystemExit(f"{P.ENV_SHARED_ROOT}={shared} is not a directory")
        if not root.is_relative_to(state_dir.resolve()) or root == state_dir.resolve():
            raise SystemExit(f"{P.ENV_SHARED_ROOT}={shared} must be a directory inside the state directory "
                             f"{state_dir} (mount the shared file system there on every node): containers see "
                             "the state directory empty but for their own volumes, and must not see other apps'")
        return root / "volumes", None
    if backend.spans_machines:
        return state_dir / "volumes", (
            f"volumes need storage every node sees: the {backend.name} backend runs containers on other machines, "
            f"so start the control plane with {P.ENV_SHARED_ROOT} set to a directory every node mounts at the "
            f"same path (a shared file system)")
    return state_dir / "volumes", None


async def _listen_tcp(cp: ControlPlane, backend) -> asyncio.AbstractServer | None:
    """Listen on TCP too when told (`HOMEPORT_LISTEN`) or when the backend runs containers on other
    machines; its containers are then told `tcp://HOST:PORT`."""
    listen = os.environ.get(P.ENV_LISTEN) or backend.listen_default()
    if not listen:
        return None
    try:
        host, port = _address.split_host_port(listen, default_port=0)
    except ValueError as exc:
        raise SystemExit(f"{P.ENV_LISTEN}: {exc}") from None
    server = await serve_tcp(cp, host, port)
    port = server.sockets[0].getsockname()[1]
    if host in ("0.0.0.0", "::"):  # every interface: containers are told the one the backend's nodes reach
        host = _address.split_host_port(backend.listen_default() or "127.0.0.1", default_port=0)[0]
    cp.launcher.address = _address.tcp(host, port)
    log.info("containers connect over TCP to %s", cp.launcher.address)
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m homeport.server")
    parser.add_argument("--backend", default=os.environ.get(P.ENV_BACKEND, "local"))
    parser.add_argument("--listen", default=None, metavar="HOST:PORT",
                        help="also listen on TCP for containers on other machines (HOMEPORT_LISTEN)")
    args = parser.parse_args(argv)
    if args.listen:
        os.environ[P.ENV_LISTEN] = args.listen
    state_dir = _config.ensure_state_dir()
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(run(state_dir, args.backend))
    finally:
        loop.close()
