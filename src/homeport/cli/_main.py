"""`homeport --help` lists every command."""

from __future__ import annotations

import os
import signal
import sys
import time
import webbrowser
from typing import Any

import rich_click as click
from rich.console import Console
from rich.table import Table

from .. import __version__, _config, _launcher
from .. import _protocol as P
from .._bridge import run_sync
from .._client import get_client
from .._protocol import ENV_RAY_ADDRESS
from ..backends import registered_backends
from ..exception import Error
from . import _logs
from ._dictqueue import dict_group, queue_group

console = Console(stderr=False)
err_console = Console(stderr=True)


def _when(t: float, seconds: bool = False) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M", time.localtime(t))


def _echo_json(rows: object, as_json: bool) -> bool:
    """`--json`: print the rows as JSON (and say so: the table is not wanted)."""
    if as_json:
        import json

        click.echo(json.dumps(rows, indent=2))
    return as_json


async def _request(msg: dict) -> Any:
    client = await get_client()
    return await client.request(msg)


def _server_request(msg: dict) -> Any:
    if not _launcher.is_listening():
        raise click.ClickException("The Homeport control plane is not running; start it with `homeport server start`.")
    return run_sync(_request(msg))


# Help is formatted by rich-click; docstrings are markdown (`code` shows as code).
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.rich_config(help_config=click.RichHelpConfiguration(text_markup="markdown"))
@click.version_option(__version__, prog_name="homeport")
def cli() -> None:
    """Homeport: run programs written for Modal on your own machine."""


# Everything after FUNC_REF belongs to the function (`homeport run app.py --detach` passes `--detach`
# to it, and `homeport run app.py::fn --help` shows the function's parameters), as with `modal run`.
@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                               "allow_interspersed_args": False})
@click.argument("func_ref")
@click.option("-m", "module_mode", is_flag=True, help="FUNC_REF is a module path, not a file.")
@click.option("-d", "--detach", is_flag=True, help="Keep the app running after the client exits.")
@click.option("-q", "--quiet", is_flag=True, help="Do not stream container output.")
@click.option("-w", "--write-result", type=click.Path(), help="Write a str or bytes result to this file.")
@click.pass_context
def run(ctx: click.Context, func_ref: str, module_mode: bool, detach: bool, quiet: bool, write_result: str | None) -> None:
    """Run FUNC_REF (file.py, file.py::function or file.py::entrypoint) in an ephemeral app.

    Options after FUNC_REF are the function's own parameters, e.g. `--name world`; homeport's own
    options go before it. `homeport run FUNC_REF --help` lists the function's parameters.
    """
    from ._run import run_program

    run_program(func_ref, list(ctx.args), module_mode=module_mode, detach=detach, quiet=quiet,
                write_result=write_result)


@cli.command()
@click.argument("app_ref")
@click.option("--name", help="Deploy under this name instead of the app's own.")
@click.option("-m", "module_mode", is_flag=True, help="APP_REF is a module path, not a file.")
def deploy(app_ref: str, name: str | None, module_mode: bool) -> None:
    """Deploy an app: its functions stay available (by name, on schedules) after this command exits."""
    from ._run import find_app, import_program

    os.environ.setdefault(P.ENV_MODAL_ALIAS, "1")
    module, _ = import_program(app_ref, module_mode)
    app = find_app(module)
    app.deploy(name=name)
    from ._run import tree_lines

    label = name or app.name
    assert label is not None  # deploy() refuses an app without a name
    console.print(f"[green]✓[/green] App [bold]{label}[/bold] deployed (version {app._deployed_version}, {app.app_id}).")
    console.print("\n".join(tree_lines(app)))
    console.print(deploy_hint(app, label), soft_wrap=True)  # one line each: people copy them


def deploy_hint(app, label: str) -> str:
    """How to call what was deployed: `Function.from_name` for a function, `Cls.from_name` for a class."""
    from .._function import Function

    objs = sorted(app.registered_functions.items())
    fn = next((n for n, o in objs if isinstance(o, Function)), None)
    cls = next((n for n, o in objs if not isinstance(o, Function)), None)
    ways = []
    if fn is not None:
        ways.append(f"modal.Function.from_name({label!r}, {fn!r})")
    if cls is not None:
        ways.append(f"modal.Cls.from_name({label!r}, {cls!r})")
    call = f"Call it with {' or '.join(ways)}; " if ways else ""
    return f"{call}stop it with `homeport app stop {label}`."


@cli.command()
@click.argument("app_ref")
@click.option("-m", "module_mode", is_flag=True, help="APP_REF is a module path, not a file.")
@click.option("--timeout", type=float, default=None, help="Stop serving after this many seconds.")
def serve(app_ref: str, module_mode: bool, timeout: float | None) -> None:
    """Serve an app's web endpoints, reloading them when its source files change, until interrupted."""
    from ._serve import serve_app

    serve_app(app_ref, module_mode, timeout)


# --- proxy auth tokens -----------------------------------------------------------------------------
@cli.group("proxy-token")
def proxy_token() -> None:
    """Credentials for web endpoints with `requires_proxy_auth=True` (sent as Modal-Key / Modal-Secret)."""


@proxy_token.command("create")
def proxy_token_create() -> None:
    """Create a token; its secret is shown once."""
    tok = _server_or_start({"t": P.PROXY_TOKEN, "op": "create"})
    console.print(f"Token id:     {tok['token_id']}\nToken secret: {tok['token_secret']}")
    console.print("Send them with each request, e.g. curl -H 'Modal-Key: <id>' -H 'Modal-Secret: <secret>' URL. "
                  "The secret is not stored in clear and cannot be shown again.")


@proxy_token.command("list")
@click.option("--json", "as_json", is_flag=True)
def proxy_token_list(as_json: bool) -> None:
    """Token ids and when they were made (never their secrets)."""
    rows = _server_or_start({"t": P.PROXY_TOKEN, "op": "list"})
    if _echo_json(rows, as_json):
        return
    table = Table("Token id", "Created")
    for r in rows:
        table.add_row(r["token_id"], _when(r["created_at"]))
    console.print(table)


@proxy_token.command("delete")
@click.argument("token_id")
def proxy_token_delete(token_id: str) -> None:
    """Delete a token: requests that send it are refused from now on."""
    _server_or_start({"t": P.PROXY_TOKEN, "op": "delete", "token_id": token_id})
    console.print(f"Deleted proxy token {token_id}.")


# --- server ----------------------------------------------------------------------------------------
@cli.group()
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
        running = _server_request({"t": P.SERVER_STATUS}).get("apps") or []
    except Error:
        running = []
    if running:
        names = ", ".join(str(a.get("name") or a.get("app_id")) if isinstance(a, dict) else str(a) for a in running)
        err_console.print(f"[yellow]Warning:[/] {len(running)} app{'s are' if len(running) != 1 else ' is'} running "
                          f"({names}): what they run now fails with 'the control plane was stopped'. Deployed "
                          "apps come back when the control plane starts again.", soft_wrap=True)
    try:
        _server_request({"t": P.SERVER_SHUTDOWN})
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
    st = _server_request({"t": P.SERVER_STATUS})
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
@cli.command()
@click.option("--no-browser", is_flag=True, help="Only print the login link.")
def dashboard(no_browser: bool) -> None:
    """Print the dashboard's login link (and open it where there is a browser).

    The link signs the browser in; keep it to yourself, like the installation's token. `/metrics`
    beside it serves Prometheus metrics to `Authorization: Bearer <token>` (the token in the link).
    """
    info = _server_or_start({"t": P.DASHBOARD})
    console.print(f"Dashboard: {info['url']}\nSign in with: {info['login_url']}", soft_wrap=True)
    if not no_browser and sys.stdout.isatty() and os.environ.get("DISPLAY"):
        webbrowser.open(info["login_url"])


# --- apps ------------------------------------------------------------------------------------------
@cli.group()
def app() -> None:
    """List, stop and inspect apps (deployed ones outlive their client)."""


def _app_rows() -> list[dict]:
    return _server_request({"t": P.APP_LIST})


def _find_app(name_or_id: str) -> dict:
    rows = [r for r in _app_rows() if name_or_id in (r["app_id"], r["name"])]
    live = [r for r in rows if r["state"] != "stopped"]
    if not (live or rows):
        raise click.ClickException(f"No app named {name_or_id!r}; see `homeport app list`.")
    return (live or rows)[-1]


@app.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.option("--all", "show_all", is_flag=True, help="Include stopped apps.")
def app_list(as_json: bool, show_all: bool) -> None:
    """Apps with their state, version and containers."""
    rows = [r for r in _app_rows() if show_all or r["state"] != "stopped"]
    if _echo_json(rows, as_json):
        return
    from rich.table import Column

    # Ids are what the other commands take: never cut (a narrow terminal wraps the other columns).
    table = Table(Column("App id", no_wrap=True, min_width=25), "Name", "State", "Version", "Containers", "Created")
    for r in rows:
        state = r["state"]
        if r.get("crash_looping"):
            state += f" (crash-looping: {', '.join(r['crash_looping'])})"
        table.add_row(r["app_id"], r["name"] or "-", state, str(r["version"] or "-"), str(r["containers"]),
                      _when(r["created_at"], seconds=True))
    console.print(table)


@app.command("stop")
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def app_stop(name: str, yes: bool) -> None:
    """Stop an app (a deployed one stops being served, scheduled and restored)."""
    row = _find_app(name)
    if row["state"] == "stopped":
        raise click.ClickException(f"App {name!r} is already stopped.")
    if not yes and sys.stdin.isatty():  # as Modal's: asks a person at a terminal, unless -y
        click.confirm(f"Stop app {row['name'] or row['app_id']} ({row['app_id']})?", abort=True)
    _server_request({"t": P.APP_STOP, "app_id": row["app_id"]})
    console.print(f"Stopped app {row['name'] or row['app_id']} ({row['app_id']}).")


@app.command("history")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def app_history(name: str, as_json: bool) -> None:
    """The versions a deployed app has had."""
    rows = _server_request({"t": P.APP_HISTORY, "name": name})
    if _echo_json(rows, as_json):
        return
    table = Table("Version", "Deployed", "Functions")
    for r in rows:
        table.add_row(str(r["version"]), _when(r["created_at"], seconds=True),
                      ", ".join(r["functions"]))
    console.print(table)


@app.command("rollback")
@click.argument("name")
@click.argument("version", required=False)
def app_rollback(name: str, version: str | None) -> None:
    """Deploy an earlier version of a deployed app again (the previous one, or VERSION: `v3` or `3`); it
    becomes a new version in `homeport app history`."""
    number = None
    if version is not None:
        try:
            number = int(version[1:] if version.lower().startswith("v") else version)
        except ValueError:
            raise click.BadParameter(f"{version!r} is not a version (v3, or 3)", param_hint="VERSION") from None
    reply = _server_request({"t": P.APP_ROLLBACK, "name": name, "version": number})
    console.print(f"[green]✓[/green] App {name} rolled back to version {reply['from_version']}: it runs as "
                  f"version {reply['version']} ({reply['app_id']}).")


@app.command("logs")
@click.argument("name")
@click.option("--function", "function_id", help="Only this function's entries (its id fu-..., or its name).")
@click.option("--function-call", "call_id", help="Only the entries of this function call (fc-...).")
@click.option("--container", "container_id", help="Only this container's entries (ta-...).")
@_logs.log_options
def app_logs(name: str, function_id: str | None, call_id: str | None, container_id: str | None, **opts) -> None:
    """An app's logs (what its containers printed, and the platform's messages about them): the last 100
    entries, or with `-f` new ones as they come until the app stops."""
    row = _find_app(name)
    _logs.print_logs({"app_id": row["app_id"], "function_id": function_id, "call_id": call_id,
                      "container_id": container_id}, opts)


# --- secrets ---------------------------------------------------------------------------------------
@cli.group()
def secret() -> None:
    """Create, list and delete named secrets (stored encrypted; used with modal.Secret.from_name)."""


@secret.command("create")
@click.argument("name")
@click.argument("pairs", nargs=-1)
@click.option("--from-dotenv", "dotenv", type=click.Path(exists=True, dir_okay=False), help="Read KEY=VALUE lines from a .env file.")
@click.option("--force", is_flag=True, help="Replace the secret if it exists.")
def secret_create(name: str, pairs: tuple[str, ...], dotenv: str | None, force: bool) -> None:
    """Create secret NAME from KEY=VALUE pairs (and/or a .env file)."""
    from .._secret import check_object_name, parse_dotenv

    check_object_name(name, "Secret")
    values: dict[str, str] = {}
    if dotenv:
        with open(dotenv) as f:
            values.update(parse_dotenv(f.read(), source=dotenv))
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.ClickException(f"{pair!r} is not KEY=VALUE.")
        values[key] = value
    if not values:
        raise click.ClickException("Give at least one KEY=VALUE (or --from-dotenv PATH).")
    _server_or_start({"t": P.SECRET_CREATE, "name": name, "values": values, "overwrite": force})
    console.print(f"Created secret {name!r} with keys: {', '.join(sorted(values))}.")
    console.print(f"Use it with modal.Secret.from_name({name!r}).")


@secret.command("list")
@click.option("--json", "as_json", is_flag=True)
def secret_list(as_json: bool) -> None:
    """Secret names and their keys (never their values)."""
    rows = _server_or_start({"t": P.SECRET_LIST})
    if _echo_json(rows, as_json):
        return
    table = Table("Name", "Keys", "Created", "Updated")
    for r in rows:
        table.add_row(r["name"], ", ".join(r["keys"]), _when(r["created_at"]),
                      _when(r["updated_at"]))
    console.print(table)


@secret.command("delete")
@click.argument("name")
def secret_delete(name: str) -> None:
    """Delete a secret."""
    _server_or_start({"t": P.SECRET_DELETE, "name": name})
    console.print(f"Deleted secret {name!r}.")


def _server_or_start(msg: dict) -> Any:
    """A request to the control plane, starting it if needed (secrets live there)."""
    return run_sync(_request(msg))


# --- volumes ---------------------------------------------------------------------------------------
@cli.group()
def volume() -> None:
    """Create, inspect and delete volumes (persistent directories mounted into containers)."""


def _vol(msg: dict) -> Any:
    return _server_or_start({"t": P.VOLUME, **msg})


@volume.command("create")
@click.argument("name")
def volume_create(name: str) -> None:
    """Create volume NAME."""
    from .._secret import check_object_name

    check_object_name(name, "Volume")
    _vol({"op": "create", "name": name})
    console.print(f"Created volume {name!r}. Mount it with volumes={{'/data': modal.Volume.from_name({name!r})}}.")


@volume.command("list")
@click.option("--json", "as_json", is_flag=True)
def volume_list(as_json: bool) -> None:
    """Volumes and when they were created."""
    rows = _vol({"op": "list"})
    if _echo_json(rows, as_json):
        return
    table = Table("Name", "Created")
    for r in rows:
        table.add_row(r["name"], _when(r["created_at"]))
    console.print(table)


@volume.command("ls")
@click.argument("name")
@click.argument("path", default="/")
@click.option("-r", "--recursive", is_flag=True)
def volume_ls(name: str, path: str, recursive: bool) -> None:
    """Files and directories in a volume."""
    table = Table("Path", "Type", "Size")
    for e in _vol({"op": "ls", "name": name, "path": path, "recursive": recursive}):
        table.add_row(e["path"], e["type"], str(e["size"]))
    console.print(table)


@volume.command("put")
@click.argument("name")
@click.argument("local_path", type=click.Path(exists=True))
@click.argument("remote_path", default="/")
@click.option("-f", "--force", is_flag=True, help="Overwrite files that exist.")
def volume_put(name: str, local_path: str, remote_path: str, force: bool) -> None:
    """Upload a file or a directory into a volume."""
    from .._volume import Volume

    vol = Volume.from_name(name)
    src = os.path.abspath(local_path)
    with vol.batch_upload(force=force) as batch:
        if os.path.isdir(src):
            batch.put_directory(src, remote_path)
        else:
            dest = remote_path.rstrip("/") + "/" + os.path.basename(src) if remote_path.endswith("/") else remote_path
            batch.put_file(src, dest)
    console.print(f"Uploaded {local_path} to {name}:{remote_path}")


@volume.command("get")
@click.argument("name")
@click.argument("remote_path")
@click.argument("local_path", default=".")
@click.option("--force", is_flag=True, help="Overwrite files that exist.")
def volume_get(name: str, remote_path: str, local_path: str, force: bool) -> None:
    """Download a file or a directory (recursively) from a volume (`-` writes the files to stdout)."""
    from .._volume import Volume
    from ._download import DownloadError, download

    try:
        files, size, where = download(Volume.from_name(name), remote_path, local_path, force)
    except DownloadError as exc:
        raise click.UsageError(str(exc)) from None
    if local_path != "-":
        console.print(f"Wrote {files} file{'s' if files != 1 else ''} ({size} bytes) to {where}")


@volume.command("rm")
@click.argument("name")
@click.argument("remote_path")
@click.option("-r", "--recursive", is_flag=True)
def volume_rm(name: str, remote_path: str, recursive: bool) -> None:
    """Remove a file (or, with -r, a directory) from a volume."""
    _vol({"op": "rm", "name": name, "path": remote_path, "recursive": recursive})
    console.print(f"Removed {name}:{remote_path}")


@volume.command("cp")
@click.argument("name")
@click.argument("paths", nargs=-1, required=True)
@click.option("-r", "--recursive", is_flag=True, help="Copy directories too.")
def volume_cp(name: str, paths: tuple[str, ...], recursive: bool) -> None:
    """Copy files within a volume: `cp VOLUME SRC... DST` (into DST when it is a directory)."""
    if len(paths) < 2:
        raise click.UsageError("Give at least one source and a destination: homeport volume cp VOLUME SRC... DST")
    *sources, dest = paths
    _vol({"op": "cp", "name": name, "sources": sources, "dest": dest, "recursive": recursive})
    console.print(f"Copied {', '.join(sources)} to {name}:{dest}")


@volume.command("rename")
@click.argument("old_name")
@click.argument("new_name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def volume_rename(old_name: str, new_name: str, yes: bool) -> None:
    """Rename a volume (functions that mount it by the old name will not find it)."""
    if not yes and sys.stdin.isatty():
        click.confirm(f"Rename volume {old_name!r} to {new_name!r}?", abort=True)
    _vol({"op": "rename", "name": old_name, "new_name": new_name})
    console.print(f"Renamed volume {old_name!r} to {new_name!r}.")


@volume.command("delete")
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def volume_delete(name: str, yes: bool) -> None:
    """Delete a volume and everything in it."""
    if not yes:
        click.confirm(f"Delete volume {name!r} and all its files?", abort=True)
    _vol({"op": "delete", "name": name})
    console.print(f"Deleted volume {name!r}.")


# --- containers ------------------------------------------------------------------------------------
@cli.group()
def container() -> None:
    """List and stop running containers."""


@container.command("list")
@click.option("--json", "as_json", is_flag=True)
def container_list(as_json: bool) -> None:
    """Containers with their app, function, state, uptime and inputs served."""
    rows = _server_request({"t": P.CONTAINER_LIST})
    if _echo_json(rows, as_json):
        return
    from rich.table import Column

    # Ids are what `container stop` takes: never cut; the start-up timeline wraps instead.
    table = Table(Column("Container", no_wrap=True), Column("App", no_wrap=True), "Function", "State", "Uptime",
                  "Served", Column("Start-up", ratio=1))
    for r in rows:
        app = r.get("app_name") or r["app_id"]
        state = r["state"]
        if r.get("start_failures", 0) >= 2 and state == "starting":
            state = f"starting (crash-looping: {r['start_failures']} failed starts)"
        if r.get("gpus"):
            state += "\nGPU " + ", ".join(_gpu_cell(g) for g in r["gpus"])
        table.add_row(r["container_id"], app, r["function"], state, f"{r['uptime']:.1f}s",
                      str(r["inputs_served"]), format_startup(r["timeline"]))
    console.print(table)


def _gpu_cell(g: dict) -> str:
    """`0 H100 3120/81559 MiB 45%`: a GPU a container holds, with its use where NVML tells."""
    out = f"{g['index']} {g['model']}"
    if "memory_used_mib" in g:
        out += f" {g['memory_used_mib']}/{g['memory_total_mib']} MiB"
    if "utilization_pct" in g:
        out += f" {g['utilization_pct']}%"
    return out


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.1f}ms" if ms < 10 else f"{ms:.0f}ms"


def format_startup(timeline: dict[str, float]) -> str:
    """A container's start-up, in total and by phase, in the order they ran:
    `"9.0ms: fork 1.2ms · import 0.3ms · enter:load 5.1ms"`. The phases: `process` (a fresh process:
    sandbox, interpreter, runtime imports), `fork` (a copy of a warm template), `restore` (a copy of a
    memory snapshot), `import` (the user's module), `enter:<hook>` (each enter hook)."""
    ready = timeline.get("ready")
    phases = " · ".join(f"{name} {_ms(seconds)}" for name, seconds in timeline.items() if name != "ready")
    if ready is None:
        return phases or "-"
    return f"{_ms(ready)}: {phases}" if phases else _ms(ready)


@container.command("stop")
@click.argument("container_id")
def container_stop(container_id: str) -> None:
    """Stop a container (its exit hooks run; running inputs fail or are retried)."""
    _server_request({"t": P.CONTAINER_STOP, "container_id": container_id})
    console.print(f"Stopping {container_id}")


# --- dicts and queues (Modal's `dict` and `queue` groups) -------------------------------------------
cli.add_command(dict_group, "dict")
cli.add_command(queue_group, "queue")
@container.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--pty/--no-pty", default=None, help="Run the command on this terminal (the default when there is one).")
@click.argument("container_id")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def container_exec(pty: bool | None, container_id: str, command: tuple[str, ...]) -> None:
    """Run COMMAND inside a running container (its namespaces, directory, environment, user and limits)."""
    from ._exec import exec_in_container

    sys.exit(exec_in_container(container_id, list(command), pty, _server_request))


@cli.command("shell")
@click.argument("ref", required=False)
@click.option("-c", "--cmd", default="/bin/bash", show_default=True, help="The command to run.")
@click.option("--pty/--no-pty", default=None, help="Run it on this terminal (the default when there is one).")
def shell(ref: str | None, cmd: str, pty: bool | None) -> None:
    """A shell in a running container (REF: its id, `ta-...`). A shell in a new container made from a
    function's spec (`file.py::func`) or an image is not built yet."""
    import shlex

    if ref is not None and ref.startswith("ta-"):
        from ._exec import exec_in_container

        sys.exit(exec_in_container(ref, shlex.split(cmd), pty, _server_request))
    from ..exception import UnimplementedError

    what = f"for {ref!r}" if ref else "without a REF"
    raise UnimplementedError(f"`homeport shell` {what} (a new container from a function's spec or an image) is not "
                             "built yet; attach to a running container with `homeport shell ta-...` (see "
                             "`homeport container list`), or run `homeport container exec ID CMD...`.")


@container.command("logs")
@click.argument("container_id")
@_logs.log_options
def container_logs(container_id: str, **opts) -> None:
    """A container's logs: the last 100 entries, or with `-f` new ones until it stops."""
    _logs.print_logs({"container_id": container_id}, opts)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except Error as exc:
        from rich.markup import escape

        # Escaped: a message may hold brackets (`list[int]`) that rich would take for markup. Not
        # wrapped: the message is one line that people (and tests) search.
        err_console.print(f"[bold red]{type(exc).__name__}:[/] {escape(str(exc))}", soft_wrap=True)
        sys.exit(1)
    except Exception as exc:  # the user's program raised: their traceback, once, without ours
        if os.environ.get("HOMEPORT_TRACEBACK") == "1":
            raise
        from ._errors import report_user_error

        report_user_error(exc)
        sys.exit(1)
