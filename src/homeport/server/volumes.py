"""Volumes: named directories under the state directory, mounted into containers by the backend.

Consistency (a choice, stronger than Modal's): a volume is one directory on this machine shared by
every container that mounts it, so a write is visible to the others at once. `commit()` makes what a
container wrote durable (it flushes to disk) and `reload()` has nothing to fetch; "what one container
commits, another sees after reload or on start" holds. Files uploaded from the client are written to a
temporary name and renamed into place, so a reader never sees half a file and two writers of different
files never interfere.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from pathlib import Path, PurePosixPath
from typing import Any

from ..exception import InvalidError, NotFoundError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS volumes (
    name TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    ephemeral INTEGER NOT NULL DEFAULT 0
);
"""


class VolumeStore:
    def __init__(self, db: Any, root: Path) -> None:
        self._db = db
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        db.executescript(_SCHEMA)
        # Ephemeral volumes of a previous control plane belonged to clients that are gone.
        for (name,) in db.execute("SELECT name FROM volumes WHERE ephemeral = 1").fetchall():
            self.delete(name)

    # --- volumes -----------------------------------------------------------------------------------
    def _dir(self, name: str) -> Path:
        return self.root / name

    def exists(self, name: str) -> bool:
        return self._db.execute("SELECT 1 FROM volumes WHERE name = ?", (name,)).fetchone() is not None

    def create(self, name: str | None = None, *, exist_ok: bool = False, ephemeral: bool = False) -> str:
        name = name or f"ephemeral-{secrets.token_hex(8)}"
        if self.exists(name):
            if exist_ok:
                return name
            raise InvalidError(f"Volume '{name}' already exists.")
        self._dir(name).mkdir(parents=True, exist_ok=True)
        self._db.execute("INSERT INTO volumes(name, created_at, ephemeral) VALUES (?, ?, ?)",
                         (name, time.time(), int(ephemeral)))
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
        if not self.exists(name):
            raise NotFoundError(f"Volume '{name}' not found.")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", new_name) or new_name in (".", ".."):
            raise InvalidError(f"Invalid Volume name {new_name!r}: use letters, digits, '.', '-' and '_' (at most "
                               "64 characters).")
        if self.exists(new_name):
            raise InvalidError(f"Volume '{new_name}' already exists.")
        os.rename(self._dir(name), self._dir(new_name))
        self._db.execute("UPDATE volumes SET name = ? WHERE name = ?", (new_name, name))

    def delete(self, name: str) -> None:
        if not self.exists(name):
            raise NotFoundError(f"Volume '{name}' not found.")
        self._db.execute("DELETE FROM volumes WHERE name = ?", (name,))
        shutil.rmtree(self._dir(name), ignore_errors=True)

    # --- files -------------------------------------------------------------------------------------
    def _path(self, name: str, path: str) -> Path:
        if not self.exists(name):
            raise NotFoundError(f"Volume '{name}' not found.")
        rel = PurePosixPath("/" + path.lstrip("/"))
        parts = [p for p in rel.parts[1:] if p not in ("", ".")]
        if ".." in parts:
            raise InvalidError(f"Volume paths may not contain '..': {path!r}")
        return self._dir(name).joinpath(*parts)

    def listdir(self, name: str, path: str, recursive: bool) -> list[dict[str, Any]]:
        base = self._dir(name)
        target = self._path(name, path)
        if not target.exists():
            raise NotFoundError(f"No such file or directory in volume '{name}': {path}")
        if target.is_file():
            entries = [target]
        elif recursive:
            entries = sorted(target.rglob("*"))
        else:
            entries = sorted(target.iterdir())
        out = []
        for p in entries:
            st = p.stat()
            out.append({"path": str(p.relative_to(base)), "type": "directory" if p.is_dir() else "file",
                        "size": st.st_size if p.is_file() else 0, "mtime": st.st_mtime})
        return out

    def read(self, name: str, path: str, offset: int = 0, length: int | None = None) -> bytes:
        """The file's bytes from `offset`, at most `length` of them (all when None): clients read big
        files in chunks, so that neither side holds a whole file in memory."""
        p = self._path(name, path)
        if not p.is_file():
            raise NotFoundError(f"No such file in volume '{name}': {path}")
        with p.open("rb") as f:
            f.seek(offset)
            return f.read(-1 if length is None else length)

    def put(self, name: str, files: list[tuple[str, bytes]], force: bool) -> int:
        for path, _ in files:
            p = self._path(name, path)
            if p.exists() and not force:
                raise InvalidError(f"{path} already exists in volume '{name}'; pass force=True (or --force) to overwrite.")
        for path, data in files:
            p = self._path(name, path)
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(f".{p.name}.{secrets.token_hex(4)}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, p)
        return len(files)

    def remove(self, name: str, path: str, recursive: bool) -> None:
        p = self._path(name, path)
        if not p.exists():
            raise NotFoundError(f"No such file or directory in volume '{name}': {path}")
        if p.is_dir():
            if not recursive:
                raise InvalidError(f"{path} is a directory; pass recursive=True (or -r) to remove it.")
            shutil.rmtree(p)
        else:
            p.unlink()

    def copy(self, name: str, sources: list[str], dest: str, recursive: bool = False) -> None:
        """`cp` within the volume: into `dest` when it is a directory (or ends with "/", or there are
        several sources), else to `dest` itself. A directory is copied only with `recursive`; every
        source is checked before anything is copied."""
        d = self._path(name, dest)
        inside = os.path.realpath(self._dir(name))
        for p in (d, *(self._path(name, src) for src in sources)):
            # A container may have planted a symlink in the volume: never follow one out of it.
            if os.path.commonpath([inside, os.path.realpath(p.parent)]) != inside:
                raise InvalidError(f"{p.relative_to(self._dir(name))} leads out of volume '{name}' (a symlink).")
        resolved = []
        for src in sources:
            s = self._path(name, src)
            if not s.exists() and not s.is_symlink():
                raise NotFoundError(f"No such file or directory in volume '{name}': {src}")
            if s.is_dir() and not recursive:
                raise InvalidError(f"{src} is a directory; pass recursive=True (or -r) to copy it.")
            resolved.append(s)
        for s in resolved:
            target = d / s.name if (d.is_dir() or dest.endswith("/") or len(sources) > 1) else d
            target.parent.mkdir(parents=True, exist_ok=True)
            if os.path.commonpath([inside, os.path.realpath(target.parent)]) != inside or (
                    s.is_dir() and not s.is_symlink() and _has_symlink(target)):
                raise InvalidError(f"{dest} leads out of volume '{name}' (a symlink).")
            if target.is_symlink():  # replaced, never written through
                target.unlink()
            if s.is_dir() and not s.is_symlink():
                shutil.copytree(s, target, symlinks=True, dirs_exist_ok=True)  # links copied as links
            else:
                shutil.copy2(s, target, follow_symlinks=False)


def _has_symlink(directory: Path) -> bool:
    """Whether an existing directory holds a symlink a copy into it could write through."""
    if directory.is_symlink():
        return True
    if not directory.is_dir():
        return False
    for root, dirs, files in os.walk(directory):
        for n in dirs + files:
            if os.path.islink(os.path.join(root, n)):
                return True
    return False
