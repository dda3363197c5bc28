"""`homeport container ...` (list, stop, exec, logs) and `homeport shell`: running containers."""

from __future__ import annotations

import shlex
import sys

import rich_click as click
from rich.table import Column, Table

from .. import _protocol as P
from ..exception import UnimplementedError
from . import _logs
from ._common import console, echo_json, server_request
from ._exec import exec_in_container


@click.group()
def container() -> None:
    """List and stop running containers."""


@container.command("list")
@click.option("--json", "as_json", is_flag=True)
def container_list(as_json: bool) -> None:
    """Containers with their app, function, state, uptime and inputs served."""
    rows = server_request(P.ContainerList())
    if echo_json(rows, as_json):
        return

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
    server_request(P.ContainerStop(container_id=container_id))
    console.print(f"Stopping {container_id}")


@container.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--pty/--no-pty", default=None, help="Run the command on this terminal (the default when there is one).")
@click.argument("container_id")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def container_exec(pty: bool | None, container_id: str, command: tuple[str, ...]) -> None:
    """Run COMMAND inside a running container (its namespaces, directory, environment, user and limits)."""
    sys.exit(exec_in_container(container_id, list(command), pty, server_request))


@click.command("shell")
@click.argument("ref", required=False)
@click.option("-c", "--cmd", default="/bin/bash", show_default=True, help="The command to run.")
@click.option("--pty/--no-pty", default=None, help="Run it on this terminal (the default when there is one).")
def shell(ref: str | None, cmd: str, pty: bool | None) -> None:
    """A shell in a running container (REF: its id, `ta-...`). A shell in a new container made from a
    function's spec (`file.py::func`) or an image is not built yet."""
    if ref is not None and ref.startswith("ta-"):
        sys.exit(exec_in_container(ref, shlex.split(cmd), pty, server_request))
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

