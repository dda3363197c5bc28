"""`homeport volume ...`: create, inspect, change and delete volumes."""

from __future__ import annotations

import os
import sys
from typing import Any

import rich_click as click
from rich.table import Table

from .. import _protocol as P
from .._secret import check_object_name
from .._volume import Volume
from ._common import console, echo_json, server_or_start, when
from ._download import DownloadError, download


@click.group()
def volume() -> None:
    """Create, inspect and delete volumes (persistent directories mounted into containers)."""


def volume_op(msg: dict) -> Any:
    return server_or_start(P.Volume(**msg))


@volume.command("create")
@click.argument("name")
def volume_create(name: str) -> None:
    """Create volume NAME."""
    check_object_name(name, "Volume")
    volume_op({"op": "create", "name": name})
    console.print(f"Created volume {name!r}. Mount it with volumes={{'/data': modal.Volume.from_name({name!r})}}.")


@volume.command("list")
@click.option("--json", "as_json", is_flag=True)
def volume_list(as_json: bool) -> None:
    """Volumes and when they were created."""
    rows = volume_op({"op": "list"})
    if echo_json(rows, as_json):
        return
    table = Table("Name", "Created")
    for r in rows:
        table.add_row(r["name"], when(r["created_at"]))
    console.print(table)


@volume.command("ls")
@click.argument("name")
@click.argument("path", default="/")
@click.option("-r", "--recursive", is_flag=True)
def volume_ls(name: str, path: str, recursive: bool) -> None:
    """Files and directories in a volume."""
    table = Table("Path", "Type", "Size")
    for e in volume_op({"op": "ls", "name": name, "path": path, "recursive": recursive}):
        table.add_row(e["path"], e["type"], str(e["size"]))
    console.print(table)


@volume.command("put")
@click.argument("name")
@click.argument("local_path", type=click.Path(exists=True))
@click.argument("remote_path", default="/")
@click.option("-f", "--force", is_flag=True, help="Overwrite files that exist.")
def volume_put(name: str, local_path: str, remote_path: str, force: bool) -> None:
    """Upload a file or a directory into a volume."""
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
    volume_op({"op": "rm", "name": name, "path": remote_path, "recursive": recursive})
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
    volume_op({"op": "cp", "name": name, "sources": sources, "dest": dest, "recursive": recursive})
    console.print(f"Copied {', '.join(sources)} to {name}:{dest}")


@volume.command("rename")
@click.argument("old_name")
@click.argument("new_name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def volume_rename(old_name: str, new_name: str, yes: bool) -> None:
    """Rename a volume (functions that mount it by the old name will not find it)."""
    if not yes and sys.stdin.isatty():
        click.confirm(f"Rename volume {old_name!r} to {new_name!r}?", abort=True)
    volume_op({"op": "rename", "name": old_name, "new_name": new_name})
    console.print(f"Renamed volume {old_name!r} to {new_name!r}.")


@volume.command("delete")
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def volume_delete(name: str, yes: bool) -> None:
    """Delete a volume and everything in it."""
    if not yes:
        click.confirm(f"Delete volume {name!r} and all its files?", abort=True)
    volume_op({"op": "delete", "name": name})
    console.print(f"Deleted volume {name!r}.")

