"""`homeport volume get`: download a file or a directory tree from a volume, like `modal volume get`.

Files are read in chunks and written as they arrive, one file after another, so a download holds at
most one chunk in memory however big the volume is. Where the files land follows `cp -r`: a remote
directory becomes LOCAL when LOCAL does not exist yet, and LOCAL/<its name> when LOCAL is a directory.
Nothing that exists is overwritten without `--force`, and that is checked before anything is written.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .._volume import FileEntry, Volume


class DownloadError(Exception):
    """What the user should change (the message says it)."""


@dataclass(frozen=True)
class Plan:
    top: Path  # the file, or the directory the tree goes to
    is_dir: bool
    items: list[tuple[FileEntry, Path]]  # each entry of the listing and where it goes


def plan(entries: list[FileEntry], remote_path: str, local: Path) -> Plan:
    """Where the listing of `remote_path` goes on this machine (no I/O but asking whether `local`
    is a directory)."""
    remote = PurePosixPath("/" + remote_path.strip("/"))
    rel_remote = remote.relative_to("/")
    if len(entries) == 1 and entries[0].type == "file" and PurePosixPath(entries[0].path) == rel_remote:
        dest = local / remote.name if local.is_dir() else local
        return Plan(dest, False, [(entries[0], dest)])
    # A directory: its tree becomes `local` (a new directory), or goes into it under the remote's name.
    top = local / remote.name if local.is_dir() and remote.name else local
    items = [(e, top.joinpath(*PurePosixPath(e.path).relative_to(rel_remote).parts)) for e in entries]
    return Plan(top, True, items)


def download(vol: Volume, remote_path: str, local_path: str, force: bool) -> tuple[int, int, str]:
    """Download `remote_path` to `local_path` ("-": its files' bytes to stdout); (files, bytes, where)."""
    # Only files and directories are downloaded: a link in a volume was made by a container and is
    # neither followed by the server nor recreated here.
    listed = vol.listdir(remote_path, recursive=True)
    entries = [e for e in listed if e.type in ("file", "directory")]
    if listed and not entries and len(listed) == 1:
        raise DownloadError(f"{remote_path} is a {listed[0].type.value} in the volume, not a file or directory; "
                            "it is not downloaded")
    if local_path == "-":
        wanted = [e for e in entries if e.type == "file"]
        total = sum(_write(vol, e.path, sys.stdout.buffer) for e in wanted)
        sys.stdout.buffer.flush()
        return len(wanted), total, "stdout"
    todo = plan(entries, remote_path, Path(local_path))
    clash = next((dest for e, dest in todo.items if dest.exists() and not (e.type == "directory" and dest.is_dir())),
                 None)
    if clash is None and not todo.is_dir and todo.top.is_dir():
        clash = todo.top
    if clash is not None and not force:
        raise DownloadError(f"Output path '{clash}' already exists. Use --force to overwrite it.")
    if todo.is_dir:
        _replace_with_dir(todo.top)
    files = total = 0
    for entry, dest in todo.items:
        if entry.type == "directory":
            _replace_with_dir(dest)
            continue
        if dest.is_dir():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(f".{dest.name}.homeport-part")  # a reader never sees half a file
        try:
            with open(part, "wb") as f:
                total += _write(vol, entry.path, f)
            os.replace(part, dest)
        finally:
            part.unlink(missing_ok=True)
        files += 1
    return files, total, str(todo.top)


def _replace_with_dir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        path.unlink()
    path.mkdir(parents=True, exist_ok=True)


def _write(vol: Volume, path: str, f: BinaryIO) -> int:
    n = 0
    for chunk in vol.read_file(path):
        f.write(chunk)
        n += len(chunk)
    return n
