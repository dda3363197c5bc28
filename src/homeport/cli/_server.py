"""`homeport server ...` (start, stop and inspect the control plane), `homeport dashboard` and
`homeport proxy-token ...` (credentials for web endpoints with `requires_proxy_auth=True`)."""

from __future__ import annotations

import os
import signal
import sys
import time
import webbrowser

import rich_click as click
from rich.table import Table

from .. import _config, _launcher
from .. import _protocol as P
from .._protocol import ENV_RAY_ADDRESS
from ..backends import registered_backends
from ..exception import Error
from ._common import console, echo_json, err_console, server_or_start, server_request, when


@click.group("proxy-token")
def proxy_token() -> None:
    """Credentials for web endpoints with `requires_proxy_auth=True` (sent as Modal-Key / Modal-Secret)."""


@proxy_token.command("create")
def proxy_token_create() -> None:
    """Create a token; its secret is shown once."""
    tok = server_or_start(P.ProxyToken(op="create"))
    console.print(f"Token id:     {tok['token_id']}\nToken secret: {tok['token_secret']}")
    console.print("Send them with each request, e.g. curl -H 'Modal-Key: <id>' -H 'Modal-Secret: <secret>' URL. "
                  "The secret is not stored in clear and cannot be shown again.")


@proxy_token.command("list")
@click.option("--json", "as_json", is_flag=True)
def proxy_token_list(as_json: bool) -> None:
    """Token ids and when they were made (never their secrets)."""
    rows = server_or_start(P.ProxyToken(op="list"))
    if echo_json(rows, as_json):
        return
    table = Table("Token id", "Created")
    for r in rows:
        table.add_row(r["token_id"], when(r["created_at"]))
    console.print(table)


@proxy_token.command("delete")
@click.argument("token_id")
def proxy_token_delete(token_id: str) -> None:
    """Delete a token: requests that send it are refused from now on."""
    server_or_start(P.ProxyToken(op="delete", token_id=token_id))
    console.print(f"Deleted proxy token {token_id}.")


# --- server ----------------------------------------------------------------------------------------
@click.group()
def server() -> None:
    """Manage the control plane (started automatically by the first call that needs it)."""


@server.command("start")
@click.option("--backend", type=click.Choice(registered_backends()), default=None,
              help="Where containers run: this machine (local, the default) or a Ray cluster (ray).")
@click.option("--ray-address", default=None, help="The Ray cluster to join (default: the one on this machine).")
@click.option("--listen", default=None, metavar="HOST:PORT",
              help="Also listen on TCP for containers on other machines (the ray backend's default: this "
                   "node's Ray address, a free port).")
def server_start(backend: str | None, ray_address: str | None, listen: str | None) -> None:
    """Start the control plane in the background."""
    if backend:
        os.environ[P.ENV_BACKEND] = backend
    if ray_address:
        os.environ[ENV_RAY_ADDRESS] = ray_address
    if listen:
        os.environ[P.ENV_LISTEN] = listen
    if _launcher.is_listening():
        console.print(f"Already running on {_config.server_address()}")
        return
    pid = _launcher.start_server(quiet=True)
    console.print(f"Started the control plane (pid {pid}) on {_config.server_address()}\nLog: {_config.log_path()}")


@server.command("stop")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for it to exit.")
def server_stop(timeout: float) -> None:
    """Stop the control plane and every container it runs."""
    if not _launcher.is_listening():
        console.print("Not running.")
        return
    pid = None
    try:
        pid = int(_config.pid_path().read_text())
    except (FileNotFoundError, ValueError):
        pass
    try:
        running = server_request(P.ServerStatus()).get("apps") or []
    except Error:
        running = []
    if running:
        names = ", ".join(str(a.get("name") or a.get("app_id")) if isinstance(a, dict) else str(a) for a in running)
        err_console.print(f"[yellow]Warning:[/] {len(running)} app{'s are' if len(running) != 1 else ' is'} running "
                          f"({names}): what they run now fails with 'the control plane was stopped'. Deployed "
                          "apps come back when the control plane starts again.", soft_wrap=True)
    try:
        server_request(P.ServerShutdown())
    except Error:
        if pid:
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _launcher.is_listening():
        time.sleep(0.05)
    while pid and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    console.print("Stopped.")


@server.command("status")
def server_status() -> None:
    """Show whether the control plane runs, where, and what it runs."""
    if not _launcher.is_listening():
        console.print(f"Not running (state directory {_config.state_dir()}).")
        sys.exit(1)
    st = server_request(P.ServerStatus())
    console.print(f"Running: pid {st['pid']} on {st['address']} (backend {st['backend']['name']})")
    if st.get("listen"):
        console.print(f"Containers connect to {st['listen']}")
    if st["backend"].get("node"):
        console.print(f"Cluster: {st['backend'].get('nodes')} nodes; the control plane's node {st['backend']['node']}")
    console.print(f"Log: {_config.log_path()}")
    console.print(f"Apps running: {len(st['apps'])}; containers: {st['containers']} "
                  f"(+{st.get('pending', 0)} waiting for cpu or memory); inputs queued: {st['queued']}")
    cap = st.get("capacity")
    if cap:
        console.print(f"Capacity for containers: {cap['cpu']:g} cores, {cap['memory_mib']} MiB")
    gpus = st.get("gpus") or []
    console.print(f"GPUs: {len(gpus)}" + ("" if gpus else " (NVML found none)"))
    for g in gpus:
        held = f"held by {g['container_id']}" if g.get("container_id") else "free"
        model = g.get("model") or "no Modal type: only gpu='any' runs on it"
        console.print(f"  {g['index']}: {g['name']} ({model}, {g['memory_mib']} MiB) {g['uuid']} - {held}")


# --- dashboard -------------------------------------------------------------------------------------
@click.command()
@click.option("--no-browser", is_flag=True, help="Only print the login link.")
def dashboard(no_browser: bool) -> None:
    """Print the dashboard's login link (and open it where there is a browser).

    The link signs the browser in; keep it to yourself, like the installation's token. `/metrics`
    beside it serves Prometheus metrics to `Authorization: Bearer <token>` (the token in the link).
    """
    info = server_or_start(P.Dashboard())
    console.print(f"Dashboard: {info['url']}\nSign in with: {info['login_url']}", soft_wrap=True)
    if not no_browser and sys.stdout.isatty() and os.environ.get("DISPLAY"):
        webbrowser.open(info["login_url"])

