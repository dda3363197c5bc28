"""Volumes: directories under the state directory, named in the database, mounted into containers by the backend.

Consistency (a choice, stronger than Modal's): a volume is one directory on this machine shared by
every container that mounts it, so a write is visible to the others at once. `commit()` makes what a
container wrote durable (it flushes to disk) and `reload()` has nothing to fetch; "what one container
commits, another sees after reload or on start" holds. Files uploaded from the client are written to a
temporary name and renamed into place, so a reader never sees half a file and two writers of different
files never interfere.
"""

from __future__ import annotations

import builtins  # `list` is a method name of the store class below
import contextlib
import os
import secrets
import stat
import time
from pathlib import Path
from typing import Any, TypeVar

from .. import _protocol as P
from .._names import object_name_problem
from ..exception import InvalidError, NotFoundError
from .beneath import Root, entry_type, rmtree_at, split

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS volumes (
    name TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    ephemeral INTEGER NOT NULL DEFAULT 0
);
"""


def _new_volume_id() -> str:
    return f"vo-{secrets.token_hex(11)}"


class VolumeStore:
    """Volumes by name in the database; each one's files in `root/<volume id>`: a name never becomes a
    path (`..` and `.` are valid names, as in Modal, and name nothing but themselves)."""

    def __init__(self, db: Any, root: Path) -> None:
        self._db = db
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        db.executescript(_SCHEMA)
        self._migrate()
        # Ephemeral volumes of a previous control plane belonged to clients that are gone.
        for (name,) in db.execute("SELECT name FROM volumes WHERE ephemeral = 1").fetchall():
            self.delete(name)

    def _migrate(self) -> None:
        """Volumes stored under their names (before ids): each gets an id and its directory is renamed
        to it, once. A name that is not one plain path component ("..", ".") had no directory of its
        own (it was the state directory, or the volumes directory): it starts empty."""
        columns = [r[1] for r in self._db.execute("PRAGMA table_info(volumes)").fetchall()]
        if "volume_id" not in columns:
            self._db.execute("ALTER TABLE volumes ADD COLUMN volume_id TEXT")
        for (name,) in self._db.execute("SELECT name FROM volumes WHERE volume_id IS NULL").fetchall():
            vid = _new_volume_id()
            old = self.root / name
            if name not in (".", "..") and "/" not in name and old.is_dir() and not old.is_symlink():
                os.rename(old, self.root / vid)
            else:
                (self.root / vid).mkdir(mode=0o755)
            self._db.execute("UPDATE volumes SET volume_id = ? WHERE name = ?", (vid, name))

    # --- volumes -----------------------------------------------------------------------------------
    def _id(self, name: str) -> str:
        row = self._db.execute("SELECT volume_id FROM volumes WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"Volume '{name}' not found.")
        return row[0]

    def _dir(self, name: str) -> Path:
        return self.root / self._id(name)

    def exists(self, name: str) -> bool:
        return self._db.execute("SELECT 1 FROM volumes WHERE name = ?", (name,)).fetchone() is not None

    def create(self, name: str | None = None, *, exist_ok: bool = False, ephemeral: bool = False) -> str:
        if name is None:
            name = f"ephemeral-{secrets.token_hex(8)}"
        else:
            problem = object_name_problem(name, "Volume")
            if problem:
                raise InvalidError(problem)
        if self.exists(name):
            if exist_ok:
                return name
            raise InvalidError(f"Volume '{name}' already exists.")
        vid = _new_volume_id()
        (self.root / vid).mkdir(mode=0o755)
        self._db.execute("INSERT INTO volumes(name, created_at, ephemeral, volume_id) VALUES (?, ?, ?, ?)",
                         (name, time.time(), int(ephemeral), vid))
        return name

    def resolve(self, name: str, create_if_missing: bool) -> Path:
        """The host directory of a volume a function mounts."""
        if not self.exists(name):
            if not create_if_missing:
                raise NotFoundError(
                    f"Volume '{name}' not found. Create it with `homeport volume create {name}` or use "
                    f"`modal.Volume.from_name({name!r}, create_if_missing=True)`."
                )
            self.create(name)
        return self._dir(name)

    def list(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT name, created_at FROM volumes WHERE ephemeral = 0 ORDER BY name").fetchall()
        return [{"name": n, "created_at": c} for n, c in rows]

    def rename(self, name: str, new_name: str) -> None:
        """A new name for the same volume: only its row changes (volumes are stored under their ids, so
        containers that mount it go on using the same directory)."""
        self._id(name)  # not found: says so
        problem = object_name_problem(new_name, "Volume")
        if problem:
            raise InvalidError(problem)
        if self.exists(new_name):
            raise InvalidError(f"Volume '{new_name}' already exists.")
        self._db.execute("UPDATE volumes SET name = ? WHERE name = ?", (new_name, name))

    def delete(self, name: str) -> None:
        vid = self._id(name)
        self._db.execute("DELETE FROM volumes WHERE name = ?", (name,))
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            with contextlib.suppress(OSError):  # what a container made unremovable stays, unnamed
                rmtree_at(fd, vid)
        finally:
            os.close(fd)

    # --- files: every path resolved beneath the volume's directory, never through a link -------------
    def _root(self, name: str) -> Root:
        return Root(str(self._dir(name)), f"volume '{name}'")

    def listdir(self, name: str, path: str, recursive: bool) -> builtins.list[dict[str, Any]]:
        with self._root(name) as root:
            parts = split(path)
            st = root.lstat(path)
            rel = "/".join(parts)
            if not stat.S_ISDIR(st.st_mode):
                found = [(rel, st)]
            else:
                fd = root.open_dir(parts, path)
                try:
                    found = list(root.scan(fd, rel, recursive))
                finally:
                    os.close(fd)
        return [{"path": p, "type": entry_type(s.st_mode), "size": s.st_size if stat.S_ISREG(s.st_mode) else 0,
                 "mtime": s.st_mtime} for p, s in found]

    def read(self, name: str, path: str, offset: int = 0, length: int | None = None) -> bytes:
        """The file's bytes from `offset`, at most `length` of them (all when None): clients read big
        files in chunks, so that neither side holds a whole file in memory."""
        with self._root(name) as root:
            return root.read(path, offset, length)

    def put(self, name: str, files: builtins.list[tuple[str, bytes]], force: bool) -> int:
        with self._root(name) as root:
            for path, _ in files:
                split(path)
                if not force and root.exists(path):
                    raise InvalidError(f"{path} already exists in volume '{name}'; pass force=True (or --force) to overwrite.")
            for path, data in files:
                root.write(path, data)
        return len(files)

    def remove(self, name: str, path: str, recursive: bool) -> None:
        with self._root(name) as root:
            if not split(path):
                raise InvalidError(f"{path!r} is the volume's root; delete the volume instead.")
            root.remove(path, recursive)

    def copy(self, name: str, sources: builtins.list[str], dest: str, recursive: bool = False) -> None:
        """`cp` within the volume: into `dest` when it is a directory (or ends with "/", or there are
        several sources), else to `dest` itself. A directory is copied only with `recursive`; every
        source is checked before anything is copied. Links are copied as links, never followed."""
        with self._root(name) as root:
            dparts = split(dest)
            resolved = []
            for src in sources:
                st = root.lstat(src)
                if stat.S_ISDIR(st.st_mode) and not recursive:
                    raise InvalidError(f"{src} is a directory; pass recursive=True (or -r) to copy it.")
                resolved.append(src)
            try:
                dest_is_dir = stat.S_ISDIR(root.lstat(dest).st_mode)
            except NotFoundError:
                dest_is_dir = False
            into = dest_is_dir or dest.endswith("/") or len(sources) > 1 or not dparts
            for src in resolved:
                sparts = split(src)
                if into:
                    root.copy(src, dparts, sparts[-1] if sparts else "root")
                else:
                    root.copy(src, dparts[:-1], dparts[-1])


def volume_op(vols: VolumeStore, msg: P.Volume) -> Any:
    """A client's volume operation (`msg.op`) on the store."""
    op, name = msg.op, msg.name
    if op == "create":
        return vols.create(name, exist_ok=msg.exist_ok, ephemeral=msg.ephemeral)
    if op == "list":
        return vols.list()
    if not isinstance(name, str):
        raise InvalidError(f"the volume operation {op!r} needs a volume name")
    if op == "exists":
        return vols.exists(name)
    if op == "delete":
        return vols.delete(name)
    if op == "ls":
        return vols.listdir(name, msg.path or "/", msg.recursive)
    if op == "read":
        return vols.read(name, _needs(msg.path, op, "path"), msg.offset or 0, msg.length)
    if op == "put":
        return vols.put(name, [(f.path, f.data) for f in _needs(msg.files, op, "files")], msg.force)
    if op == "rm":
        return vols.remove(name, _needs(msg.path, op, "path"), msg.recursive)
    if op == "cp":
        return vols.copy(name, _needs(msg.sources, op, "sources"), _needs(msg.dest, op, "dest"), msg.recursive)
    if op == "rename":
        return vols.rename(name, _needs(msg.new_name, op, "new_name"))
    raise LookupError(f"unknown volume operation {op!r}")


def _needs(value: T | None, op: str, field: str) -> T:
    if value is None:
        raise InvalidError(f"the volume operation {op!r} needs `{field}`")
    return value
