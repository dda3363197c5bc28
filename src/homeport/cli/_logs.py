"""`homeport app logs` and `homeport container logs`: the control plane's log store (server/logs.py),
printed as Modal 1.6 prints them: the last entries and exit, or `-f` to follow until the app stops."""

from __future__ import annotations

import datetime
import re
import sys
import time
from typing import Any

import rich_click as click

from .. import _protocol as P
from .._bridge import run_sync
from .._client import get_client

FOLLOW_POLL_SECONDS = 0.25
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(value: str | None, option: str) -> float | None:
    """`--since`/`--until`: an ISO 8601 date and time (local time unless it says), or a time ago
    (`30s`, `5m`, `2h`, `1d`, `1w`)."""
    if value is None:
        return None
    m = _RELATIVE.match(value)
    if m:
        return time.time() - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        when = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither an ISO 8601 time (2026-01-31T12:00) nor a time ago "
                                 "(30s, 5m, 2h, 1d)", param_hint=option) from None
    return when.timestamp()


def log_options(f: Any) -> Any:
    """The options `app logs` and `container logs` share (Modal's names)."""
    for decorator in reversed([
        click.option("-f", "--follow", is_flag=True, help="Keep printing new entries until the app (container) stops."),
        click.option("--since", help="Entries from this time: ISO 8601 (2026-01-31T12:00) or a time ago (5m, 2h, 1d)."),
        click.option("--until", help="Entries before this time (same forms as --since)."),
        click.option("-n", "--tail", type=click.IntRange(min=0), default=None,
                     help="The last N entries (default 100; with --since/--until: all in the range)."),
        click.option("--search", help="Only lines that contain this text."),
        click.option("-s", "--source", "sources", multiple=True, type=click.Choice(["stdout", "stderr", "system"]),
                     help="Only this stream (repeatable): stdout, stderr, or system (the platform's messages)."),
        click.option("--timestamps", is_flag=True, help="Start each line with its time."),
        click.option("--show-function-id", is_flag=True, help="Start each line with its function."),
        click.option("--show-function-call-id", is_flag=True, help="Start each line with its function call."),
        click.option("--show-container-id", is_flag=True, help="Start each line with its container."),
        click.option("--timeout", type=float, default=None, hidden=True, help="Stop following after this many seconds."),
    ]):
        f = decorator(f)
    return f


def _format(e: dict[str, Any], opts: dict[str, Any]) -> str:
    prefix = ""
    if opts.get("timestamps"):
        prefix += datetime.datetime.fromtimestamp(e["ts"]).astimezone().isoformat(timespec="milliseconds") + " "
    if opts.get("show_function_id"):
        prefix += f"{e['function_id'] or '-'} "
    if opts.get("show_function_call_id"):
        prefix += f"{e['call_id'] or '-'} "
    if opts.get("show_container_id"):
        prefix += f"{e['container_id'] or '-'} "
    data = e["data"]
    return prefix + (data if data.endswith("\n") else data + "\n")


def print_logs(filters: dict[str, Any], opts: dict[str, Any]) -> None:
    """Print the entries that `filters` (app_id, container_id, function_id, call_id) and the options
    select; with `follow`, go on until what they belong to has stopped and nothing is left to read."""
    since = parse_time(opts.get("since"), "--since")
    until = parse_time(opts.get("until"), "--until")
    tail = opts.get("tail")
    if tail is None and since is None and until is None:
        tail = 100
    query: dict[str, Any] = {**filters, "since": since, "until": until, "search": opts.get("search") or None,
                             "streams": list(opts.get("sources") or ()) or None}
    timeout = opts.get("timeout")

    async def go() -> None:
        import asyncio

        client = await get_client()
        reply = await client.request(P.LogQuery(**query, limit=tail))
        out = sys.stdout
        last = 0
        for e in reply["entries"]:
            out.write(_format(e, opts))
            last = e["id"]
        out.flush()
        if not opts.get("follow"):
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        running = reply["running"]
        while deadline is None or time.monotonic() < deadline:
            reply = await client.request(P.LogQuery(**query, after_id=last, limit=1000))
            for e in reply["entries"]:
                out.write(_format(e, opts))
                last = e["id"]
            out.flush()
            if reply["entries"]:
                continue
            if not running:  # it had stopped at the previous read, and nothing came after
                return
            running = reply["running"]
            await asyncio.sleep(FOLLOW_POLL_SECONDS)

    try:
        run_sync(go())
    except KeyboardInterrupt:
        pass
