"""`homeport --help` lists every command."""

from __future__ import annotations

import os
import sys

import rich_click as click

from .. import __version__
from .. import _protocol as P
from ..exception import Error
from ._apps import app
from ._common import console, err_console
from ._containers import container, shell
from ._dictqueue import dict_group, queue_group
from ._secrets import secret
from ._server import dashboard, proxy_token, server
from ._volumes import volume


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


# The command groups, each in its own module.
cli.add_command(proxy_token, "proxy-token")
cli.add_command(server, "server")
cli.add_command(dashboard, "dashboard")
cli.add_command(app, "app")
cli.add_command(secret, "secret")
cli.add_command(volume, "volume")
cli.add_command(container, "container")
cli.add_command(shell, "shell")
cli.add_command(dict_group, "dict")  # Modal's `dict` and `queue` groups
cli.add_command(queue_group, "queue")


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
