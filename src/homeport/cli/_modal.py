"""The `modal` command: Modal's command names and options, served by Homeport.

It reuses the `homeport` commands; where Modal's names mean something else than Homeport's, Modal's
meaning wins here (`modal server` is about `@app.server` objects; the control plane stays
`homeport server start|stop|status`). Where Modal's own client is installed and `HOMEPORT_MODAL` does not
choose Homeport, this command hands over to Modal's (`python -m modal`).
"""

from __future__ import annotations

import datetime
import os
import sys

import rich_click as click
from rich.table import Table

from .. import __version__
from .. import _protocol as P
from ..exception import Error
from . import _apps, _volumes
from ._common import console, echo_json, err_console, server_request
from ._containers import container, shell
from ._dictqueue import dict_group, queue_group
from ._main import serve
from ._secrets import secret


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.rich_config(help_config=click.RichHelpConfiguration(text_markup="markdown"))
@click.version_option(__version__, prog_name="modal (Homeport)")
def modal_cli() -> None:
    """Modal's command line, served by Homeport (`homeport --help` for the control plane)."""


# --- run / deploy / serve / shell ------------------------------------------------------------------
@modal_cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                     "allow_interspersed_args": False})
@click.argument("func_ref")
@click.option("-m", "module_mode", is_flag=True, help="FUNC_REF is a module path, not a file.")
@click.option("-d", "--detach", is_flag=True, help="Keep the app running after the client exits.")
@click.option("-q", "--quiet", is_flag=True, help="Do not stream container output.")
@click.option("-w", "--write-result", type=click.Path(), help="Write a str or bytes result to this file.")
@click.option("-e", "--env", "env", default=None, help="Environment (Homeport has one: main).")
@click.pass_context
def run(ctx: click.Context, func_ref: str, module_mode: bool, detach: bool, quiet: bool,
        write_result: str | None, env: str | None) -> None:
    """Run a Modal function or local entrypoint (`file.py`, `file.py::fn`, `-m pkg.mod::fn`)."""
    _check_env(env)
    from ._run import run_program

    run_program(func_ref, list(ctx.args), module_mode=module_mode, detach=detach, quiet=quiet,
                write_result=write_result)


@modal_cli.command()
@click.argument("app_ref")
@click.option("--name", help="Deploy under this name instead of the app's own.")
@click.option("--tag", default="", help="A tag for this version (shown by `modal app history`).")
@click.option("--strategy", type=click.Choice(["rolling", "recreate"]), default="rolling")
@click.option("-m", "module_mode", is_flag=True, help="APP_REF is a module path, not a file.")
@click.option("-e", "--env", "env", default=None, help="Environment (Homeport has one: main).")
def deploy(app_ref: str, name: str | None, tag: str, strategy: str, module_mode: bool, env: str | None) -> None:
    """Deploy an app: it stays available (by name, on schedules) after this command exits."""
    _check_env(env)
    from ._run import find_app, import_program, tree_lines

    os.environ.setdefault(P.ENV_MODAL_ALIAS, "1")
    module, _ = import_program(app_ref, module_mode)
    app = find_app(module)
    app.deploy(name=name, tag=tag, strategy=strategy)
    label = name or app.name
    console.print(f"[green]✓[/green] App [bold]{label}[/bold] deployed (version v{app._deployed_version}, "
                    f"{app.app_id}).")
    console.print("\n".join(tree_lines(app)))


modal_cli.add_command(serve, "serve")


modal_cli.add_command(shell, "shell")  # a shell in a running container (`ta-...`); a new one is not built


# --- app -------------------------------------------------------------------------------------------
@modal_cli.group()
def app() -> None:
    """List, stop and inspect apps."""


for _name in ("list", "stop", "logs"):
    app.add_command(_apps.app.commands[_name], _name)


def history_rows(name: str) -> list[dict]:
    """Modal's `app history --json`: newest first, `version` as "vN"."""
    rows = server_request(P.AppHistory(name=name))
    out = []
    for r in sorted(rows, key=lambda r: r["version"], reverse=True):
        when = datetime.datetime.fromtimestamp(r["created_at"]).astimezone().isoformat(timespec="seconds")
        row = {"version": f"v{r['version']}", "time_deployed": when,
               "client": r.get("client", ""), "deployed_by": r.get("deployed_by", ""),
               "commit": r.get("commit", "")}
        if r.get("tag"):
            row["tag"] = r["tag"]
        out.append(row)
    return out


@app.command("history")
@click.argument("app_name")
@click.option("--json", "as_json", is_flag=True)
@click.option("-e", "--env", "env", default=None)
def app_history(app_name: str, as_json: bool, env: str | None) -> None:
    """The versions a deployed app has had, newest first."""
    _check_env(env)
    rows = history_rows(app_name)
    if echo_json(rows, as_json):
        return
    table = Table("Version", "Time deployed", "Client", "Deployed by", "Commit", "Tag")
    for r in rows:
        table.add_row(r["version"], r["time_deployed"], r["client"], r["deployed_by"], r["commit"], r.get("tag", ""))
    console.print(table)


# --- storage, secrets, containers ------------------------------------------------------------------
@modal_cli.group()
def volume() -> None:
    """Create, inspect and change volumes (persistent directories mounted into containers)."""


for _name, _cmd in _volumes.volume.commands.items():
    volume.add_command(_cmd, _name)


@volume.command("cp")
@click.argument("volume_name")
@click.argument("paths", nargs=-1, required=True)
@click.option("-r", "--recursive", is_flag=True)
def volume_cp(volume_name: str, paths: tuple[str, ...], recursive: bool) -> None:
    """Copy files within a volume: `modal volume cp VOL SRC... DST`."""
    if len(paths) < 2:
        raise click.UsageError("give at least one source and a destination")
    _volumes.volume_op({"op": "cp", "name": volume_name, "sources": list(paths[:-1]), "dest": paths[-1],
            "recursive": recursive})
    console.print(f"Copied {', '.join(paths[:-1])} to {volume_name}:{paths[-1]}")


modal_cli.add_command(secret, "secret")
modal_cli.add_command(container, "container")

modal_cli.add_command(dict_group, "dict")
modal_cli.add_command(queue_group, "queue")


# --- server (Modal's: `@app.server` objects) --------------------------------------------------------
@modal_cli.group("server")
def server_group() -> None:
    """`@app.server` objects (the control plane is `homeport server start|stop|status`)."""


@server_group.command("info")
@click.argument("app_name")
@click.argument("server_name")
def server_info(app_name: str, server_name: str) -> None:
    """The URL of a deployed `@app.server`."""
    from ..exception import UnimplementedError

    # There is no `Server.from_name` yet (this imported a module `homeport._server` that does not exist).
    raise UnimplementedError(f"`modal server info {app_name} {server_name}`: looking up a deployed "
                             "`@app.server` by name is not built yet")


# --- token (no account on a self-hosted control plane) ----------------------------------------------
@modal_cli.group()
def token() -> None:
    """Modal's API tokens: Homeport needs none (its control plane is local); these say so and succeed."""


@token.command("new", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def token_new() -> None:
    """No token is needed."""
    console.print("Homeport needs no token: the control plane on this machine accepts this user.")


@token.command("set", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def token_set() -> None:
    """No token is needed."""
    console.print("Homeport needs no token: the control plane on this machine accepts this user.")


@token.command("info")
def token_info() -> None:
    console.print("Homeport needs no token: the control plane on this machine accepts this user.")


def _check_env(env: str | None) -> None:
    if env not in (None, "", "main"):
        raise click.UsageError(f"Homeport has one environment, 'main'; there is no environment {env!r}.")


def main() -> None:
    from _homeport_modal import active

    if not active():
        # Modal's own client is installed (or HOMEPORT_MODAL=0): it answers `modal`.
        import runpy

        from _homeport_modal import modal_client_installed

        if not modal_client_installed():
            sys.exit("modal: HOMEPORT_MODAL=0 chooses Modal's own client, and it is not installed "
                     "(`pip install modal`, or unset HOMEPORT_MODAL to use Homeport).")

        sys.argv[0] = "modal"
        runpy.run_module("modal", run_name="__main__", alter_sys=True)
        return
    try:
        modal_cli(prog_name="modal", standalone_mode=True)
    except Error as exc:
        from rich.markup import escape

        err_console.print(f"[bold red]{type(exc).__name__}:[/] {escape(str(exc))}", soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
