"""`homeport dict ...` and `homeport queue ...`: Modal's `modal dict` and `modal queue` commands.

The groups are plain click groups (`dict_group`, `queue_group`) so that both the `homeport` and the
`modal` command can register them.
"""

from __future__ import annotations

import json
import time
from typing import Any

import rich_click as click
from rich.console import Console
from rich.table import Table

from .._dict import Dict
from .._queue import Queue

console = Console(stderr=False)

_ENV = click.option("-e", "--env", "env", default=None, help="Environment (Homeport has one; accepted for Modal's CLI).")


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _rows(objs: list[Any]) -> list[dict[str, Any]]:
    return [{"Name": o.name, "Created at": _when(o._created_at), "Created by": None} for o in objs]


def _print_rows(rows: list[dict[str, Any]], as_json: bool, title: str) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(*(rows[0].keys() if rows else ("Name", "Created at", "Created by")), title=title)
    for r in rows:
        table.add_row(*(str(v) if v is not None else "" for v in r.values()))
    console.print(table)


def _confirm(yes: bool, what: str) -> None:
    if not yes:
        click.confirm(f"Are you sure you want to irrevocably {what}?", abort=True)


def _show(value: Any, use_repr: bool) -> str:
    text = repr(value) if use_repr else str(value)
    return text if use_repr or len(text) <= 80 else text[:77] + "..."


# --- dict ------------------------------------------------------------------------------------------
@click.group("dict")
def dict_group() -> None:
    """Manage `modal.Dict` objects (distributed key-value stores)."""


@dict_group.command("create")
@click.argument("name")
@_ENV
def dict_create(name: str, env: str | None) -> None:
    """Create a named Dict."""
    Dict.objects.create(name)


@dict_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@_ENV
def dict_list(as_json: bool, env: str | None) -> None:
    """List the named Dicts, newest first."""
    _print_rows(_rows(Dict.objects.list()), as_json, "Dicts")


@dict_group.command("clear")
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@_ENV
def dict_clear(name: str, yes: bool, env: str | None) -> None:
    """Remove every entry of a Dict."""
    d = Dict.from_name(name)
    d.hydrate()
    _confirm(yes, f"clear the contents of Dict '{name}'")
    d.clear()


@dict_group.command("delete")
@click.argument("name")
@click.option("--allow-missing", is_flag=True, help="Do nothing when the Dict does not exist.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@_ENV
def dict_delete(name: str, allow_missing: bool, yes: bool, env: str | None) -> None:
    """Delete a named Dict and its contents."""
    _confirm(yes, f"delete the Dict '{name}'")
    Dict.objects.delete(name, allow_missing=allow_missing)


@dict_group.command("get")
@click.argument("name")
@click.argument("key")
@_ENV
def dict_get(name: str, key: str, env: str | None) -> None:
    """Print the value of KEY (the CLI always takes keys as strings)."""
    console.print(Dict.from_name(name).get(key))


@dict_group.command("items")
@click.argument("name")
@click.argument("n", type=int, default=20)
@click.option("-a", "--all", "show_all", is_flag=True, help="Show every item (N is ignored).")
@click.option("-r", "--repr", "use_repr", is_flag=True, help="Show the repr() of keys and values.")
@click.option("--json", "as_json", is_flag=True)
@_ENV
def dict_items(name: str, n: int, show_all: bool, use_repr: bool, as_json: bool, env: str | None) -> None:
    """Show N items of a Dict (in no particular order)."""
    items: list[tuple[Any, Any]] = []
    for key, value in Dict.from_name(name).items():
        if not show_all and len(items) >= n:
            break
        items.append((key, value))
    if as_json:
        click.echo(json.dumps([{"key": _show(k, use_repr), "value": _show(v, use_repr)} for k, v in items], indent=2))
        return
    table = Table("Key", "Value", title=f"Dict '{name}'")
    for k, v in items:
        table.add_row(_show(k, use_repr), _show(v, use_repr))
    console.print(table)


# --- queue -----------------------------------------------------------------------------------------
@click.group("queue")
def queue_group() -> None:
    """Manage `modal.Queue` objects (distributed FIFO queues)."""


_PARTITION = click.option("-p", "--partition", default=None, help="The partition (the default one when omitted).")


@queue_group.command("create")
@click.argument("name")
@_ENV
def queue_create(name: str, env: str | None) -> None:
    """Create a named Queue."""
    Queue.objects.create(name)


@queue_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@_ENV
def queue_list(as_json: bool, env: str | None) -> None:
    """List the named Queues, newest first, with how many items they hold."""
    queues = Queue.objects.list()
    rows = _rows(queues)
    for row, q in zip(rows, queues):
        row["Total size"] = q.len(total=True)
    _print_rows(rows, as_json, "Queues")


@queue_group.command("clear")
@click.argument("name")
@_PARTITION
@click.option("-a", "--all", "clear_all", is_flag=True, help="Clear every partition.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@_ENV
def queue_clear(name: str, partition: str | None, clear_all: bool, yes: bool, env: str | None) -> None:
    """Remove every item of a partition (or of all of them)."""
    q = Queue.from_name(name)
    q.hydrate()
    which = "all partitions" if clear_all else f"partition '{partition}'" if partition else "the default partition"
    _confirm(yes, f"clear the contents of {which} of Queue '{name}'")
    q.clear(partition=partition, all=clear_all)


@queue_group.command("delete")
@click.argument("name")
@click.option("--allow-missing", is_flag=True, help="Do nothing when the Queue does not exist.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@_ENV
def queue_delete(name: str, allow_missing: bool, yes: bool, env: str | None) -> None:
    """Delete a named Queue and its contents."""
    _confirm(yes, f"delete the Queue '{name}'")
    Queue.objects.delete(name, allow_missing=allow_missing)


@queue_group.command("len")
@click.argument("name")
@_PARTITION
@click.option("-t", "--total", is_flag=True, help="Count the items of every partition.")
@_ENV
def queue_len(name: str, partition: str | None, total: bool, env: str | None) -> None:
    """Print the number of items in a partition (or in all of them)."""
    console.print(Queue.from_name(name).len(partition=partition, total=total))


@queue_group.command("peek")
@click.argument("name")
@click.argument("n", type=int, default=1)
@_PARTITION
@_ENV
def queue_peek(name: str, n: int, partition: str | None, env: str | None) -> None:
    """Print the next N items of a partition without removing them."""
    shown = 0
    for item in Queue.from_name(name).iterate(partition=partition):
        if shown >= n:
            break
        console.print(item)
        shown += 1
