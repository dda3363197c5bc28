"""What the command groups share: the consoles, time and `--json` formatting, and requests to the control plane."""

from __future__ import annotations

import json
import time
from typing import Any

import rich_click as click
from rich.console import Console

from .. import _launcher
from .. import _protocol as P
from .._bridge import run_sync
from .._client import get_client

console = Console(stderr=False)
err_console = Console(stderr=True)


def when(t: float, seconds: bool = False) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M", time.localtime(t))


def echo_json(rows: object, as_json: bool) -> bool:
    """`--json`: print the rows as JSON (and say so: the table is not wanted)."""
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    return as_json


async def _request(msg: P.Request) -> Any:
    client = await get_client()
    return await client.request(msg)


def server_request(msg: P.Request) -> Any:
    """A request to the control plane, which must be running (what it runs is asked about)."""
    if not _launcher.is_listening():
        raise click.ClickException("The Homeport control plane is not running; start it with `homeport server start`.")
    return run_sync(_request(msg))


def server_or_start(msg: P.Request) -> Any:
    """A request to the control plane, starting it if needed (secrets, volumes and tokens live there)."""
    return run_sync(_request(msg))
