"""`homeport app ...`: list, stop, roll back and inspect apps, and read their logs."""

from __future__ import annotations

import sys

import rich_click as click
from rich.table import Column, Table

from .. import _protocol as P
from . import _logs
from ._common import console, echo_json, server_request, when


@click.group()
def app() -> None:
    """List, stop and inspect apps (deployed ones outlive their client)."""


def _app_rows() -> list[dict]:
    return server_request(P.AppList())


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
    if echo_json(rows, as_json):
        return

    # Ids are what the other commands take: never cut (a narrow terminal wraps the other columns).
    table = Table(Column("App id", no_wrap=True, min_width=25), "Name", "State", "Version", "Containers", "Created")
    for r in rows:
        state = r["state"]
        if r.get("crash_looping"):
            state += f" (crash-looping: {', '.join(r['crash_looping'])})"
        table.add_row(r["app_id"], r["name"] or "-", state, str(r["version"] or "-"), str(r["containers"]),
                      when(r["created_at"], seconds=True))
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
    server_request(P.AppStop(app_id=row["app_id"]))
    console.print(f"Stopped app {row['name'] or row['app_id']} ({row['app_id']}).")


@app.command("history")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def app_history(name: str, as_json: bool) -> None:
    """The versions a deployed app has had."""
    rows = server_request(P.AppHistory(name=name))
    if echo_json(rows, as_json):
        return
    table = Table("Version", "Deployed", "Functions")
    for r in rows:
        table.add_row(str(r["version"]), when(r["created_at"], seconds=True),
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
    reply = server_request(P.AppRollback(name=name, version=number))
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
