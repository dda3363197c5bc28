"""`homeport secret ...`: create, list and delete named secrets."""

from __future__ import annotations

import rich_click as click
from rich.table import Table

from .. import _protocol as P
from .._secret import check_object_name, parse_dotenv
from ._common import console, echo_json, server_or_start, when


@click.group()
def secret() -> None:
    """Create, list and delete named secrets (stored encrypted; used with modal.Secret.from_name)."""


@secret.command("create")
@click.argument("name")
@click.argument("pairs", nargs=-1)
@click.option("--from-dotenv", "dotenv", type=click.Path(exists=True, dir_okay=False), help="Read KEY=VALUE lines from a .env file.")
@click.option("--force", is_flag=True, help="Replace the secret if it exists.")
def secret_create(name: str, pairs: tuple[str, ...], dotenv: str | None, force: bool) -> None:
    """Create secret NAME from KEY=VALUE pairs (and/or a .env file)."""
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
    server_or_start(P.SecretCreate(name=name, values=values, overwrite=force))
    console.print(f"Created secret {name!r} with keys: {', '.join(sorted(values))}.")
    console.print(f"Use it with modal.Secret.from_name({name!r}).")


@secret.command("list")
@click.option("--json", "as_json", is_flag=True)
def secret_list(as_json: bool) -> None:
    """Secret names and their keys (never their values)."""
    rows = server_or_start(P.SecretList())
    if echo_json(rows, as_json):
        return
    table = Table("Name", "Keys", "Created", "Updated")
    for r in rows:
        table.add_row(r["name"], ", ".join(r["keys"]), when(r["created_at"]),
                      when(r["updated_at"]))
    console.print(table)


@secret.command("delete")
@click.argument("name")
def secret_delete(name: str) -> None:
    """Delete a secret."""
    server_or_start(P.SecretDelete(name=name))
    console.print(f"Deleted secret {name!r}.")
