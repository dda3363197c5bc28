"""`Volume`: a named, persistent file system mounted into a function's containers.

Volumes live under the control plane's state directory and survive apps and restarts; the local
backend mounts them at the paths the user gave (see `homeport.server.volumes` for the consistency model).
"""

from __future__ import annotations

import contextlib
import enum
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ._secret import _in_container, check_object_name
from .exception import InvalidError

__all__ = ["FileEntry", "FileEntryType", "Volume"]


@contextlib.contextmanager
def _ephemeral(volume: Volume) -> Iterator[Volume]:
    volume._name = volume._op("create", ephemeral=True)
    try:
        yield volume
    finally:
        try:
            volume._op("delete")
        finally:
            volume._name = None


class Volume:
    """A persistent file system, mounted at a path of your choice in a function's containers.

    ```python
    vol = modal.Volume.from_name("model-cache", create_if_missing=True)

    @app.function(volumes={"/cache": vol})
    def f():
        ...

    with modal.Volume.ephemeral() as scratch:
        ...
    ```
    """

    __slots__ = ("_create_if_missing", "_environment_name", "_is_ephemeral", "_name", "_version")
    _name: str | None
    _create_if_missing: bool
    _environment_name: str | None
    _version: int | None
    _is_ephemeral: bool

    def __init__(self) -> None:
        raise InvalidError("Volume cannot be created directly; use Volume.from_name or Volume.ephemeral.")

    @classmethod
    def _new(
        cls,
        *,
        name: str | None,
        create_if_missing: bool = False,
        environment_name: str | None = None,
        version: int | None = None,
        is_ephemeral: bool = False,
    ) -> Volume:
        obj = object.__new__(cls)
        obj._name = name
        obj._create_if_missing = create_if_missing
        obj._environment_name = environment_name
        obj._version = version
        obj._is_ephemeral = is_ephemeral
        return obj

    @classmethod
    def from_name(
        cls,
        name: str,
        *,
        create_if_missing: bool = False,
        environment_name: str | None = None,
        version: int | None = None,
    ) -> Volume:
        """A reference to the volume called `name`, resolved when the app runs."""
        check_object_name(name, "Volume")
        if not isinstance(create_if_missing, bool):
            raise InvalidError(f"`create_if_missing` must be a bool, not {type(create_if_missing).__name__}")
        if environment_name is not None and not isinstance(environment_name, str):
            raise InvalidError(f"`environment_name` must be a string, not {type(environment_name).__name__}")
        if version is not None and (isinstance(version, bool) or version not in (1, 2)):
            raise InvalidError(f"Invalid Volume version: {version!r}. Use 1, 2 or None (the default).")
        return cls._new(
            name=name, create_if_missing=create_if_missing, environment_name=environment_name, version=version
        )

    @classmethod
    def ephemeral(
        cls, *, environment_name: str | None = None, version: int | None = None
    ) -> contextlib.AbstractContextManager[Volume]:
        """A nameless volume that lives as long as the `with` block."""
        if version is not None and (isinstance(version, bool) or version not in (1, 2)):
            raise InvalidError(f"Invalid Volume version: {version!r}. Use 1, 2 or None (the default).")
        return _ephemeral(cls._new(name=None, environment_name=environment_name, version=version, is_ephemeral=True))

    @property
    def name(self) -> str | None:
        return self._name

    @property
    def create_if_missing(self) -> bool:
        return self._create_if_missing

    @property
    def environment_name(self) -> str | None:
        return self._environment_name

    @property
    def version(self) -> int | None:
        return self._version

    @property
    def is_ephemeral(self) -> bool:
        return self._is_ephemeral

    def same_volume(self, other: Volume) -> bool:
        """Whether both objects stand for the same volume on the server."""
        if self is other:
            return True
        if self._is_ephemeral or other._is_ephemeral:
            return False
        return (self._name, self._environment_name) == (other._name, other._environment_name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self._name,
            "create_if_missing": self._create_if_missing,
            "environment_name": self._environment_name,
            "version": self._version,
            "is_ephemeral": self._is_ephemeral,
        }

    def __repr__(self) -> str:
        if self._is_ephemeral:
            return "Volume.ephemeral()"
        return f"Volume.from_name({self._name!r})"

    # --- operations that need the server ----------------------------------------------------------
    def _vname(self) -> str:
        if self._name is None:
            raise InvalidError("This ephemeral Volume is only usable inside its `with modal.Volume.ephemeral()` block.")
        return self._name

    def _op(self, op: str, **fields: Any) -> Any:
        from . import _protocol as P
        from ._bridge import run_sync
        from ._client import get_client

        async def go() -> Any:
            client = await get_client()
            return await client.request({"t": P.VOLUME, "op": op, "name": self._name, **fields})

        if self._name is not None and self._create_if_missing and op != "create":
            self._create_if_missing = False
            self._op("create", exist_ok=True)
        return run_sync(go())

    def commit(self) -> None:
        """Make what this container wrote durable. Homeport volumes are one directory on this machine
        shared by every container that mounts them, so writes are visible to the others at once;
        commit flushes them to disk."""
        if not _in_container():
            raise InvalidError("Volume.commit() can only be called inside a container that mounts the volume.")
        os.sync()

    def reload(self) -> None:
        """See what other containers committed. Homeport volumes are shared live, so there is nothing
        to fetch; kept for programs written for Modal."""
        if not _in_container():
            raise InvalidError("Volume.reload() can only be called inside a container that mounts the volume.")

    def read_file(self, path: str) -> Iterator[bytes]:
        """The file's contents, in chunks, each read from the server as it is asked for (a big file
        is never in memory all at once)."""
        offset = 0
        while True:
            chunk = self._op("read", path=path, offset=offset, length=_CHUNK)
            if chunk:
                yield chunk
            if len(chunk) < _CHUNK:
                return
            offset += len(chunk)

    def read_file_into_fileobj(self, path: str, fileobj: Any) -> int:
        n = 0
        for chunk in self.read_file(path):
            fileobj.write(chunk)
            n += len(chunk)
        return n

    def listdir(self, path: str = "/", *, recursive: bool = False) -> list[FileEntry]:
        return [FileEntry(**e) for e in self._op("ls", path=path, recursive=recursive)]

    def iterdir(self, path: str = "/", *, recursive: bool = True) -> Iterator[FileEntry]:
        yield from self.listdir(path, recursive=recursive)

    def batch_upload(self, force: bool = False) -> _BatchUpload:
        """`with vol.batch_upload() as batch: batch.put_file(local, remote); batch.put_directory(...)`"""
        return _BatchUpload(self, force)

    def remove_file(self, path: str, recursive: bool = False) -> None:
        self._op("rm", path=path, recursive=recursive)

    def copy_files(self, src_paths: list[str], dst_path: str, recursive: bool = False) -> None:
        """Copy files within the volume, like `cp`: into `dst_path` when it is a directory (or ends
        with "/", or there are several sources). Directories are copied only with `recursive=True`.

        ```python
        vol.copy_files(["/models/a.bin"], "/backup/")
        vol.copy_files(["/models"], "/backup/models", recursive=True)
        ```
        """
        self._op("cp", sources=list(src_paths), dest=dst_path, recursive=bool(recursive))

    @staticmethod
    def delete(name: str, *, environment_name: str | None = None) -> None:
        Volume.from_name(name)._op("delete")

    def hydrate(self) -> Volume:
        self._op("create", exist_ok=True) if self._create_if_missing else self._op("ls", path="/")
        return self


_CHUNK = 1 << 20


class FileEntryType(str, enum.Enum):
    """What a volume entry is (Modal's names). A symbolic link is listed as SYMLINK and never followed
    by any volume operation. Values are strings, so `entry.type == "file"` holds too."""

    UNSPECIFIED = "unspecified"
    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    FIFO = "fifo"
    SOCKET = "socket"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class FileEntry:
    path: str
    type: FileEntryType
    size: int
    mtime: float

    def __post_init__(self) -> None:
        if not isinstance(self.type, FileEntryType):
            try:
                kind = FileEntryType(self.type)
            except ValueError:
                kind = FileEntryType.UNSPECIFIED
            object.__setattr__(self, "type", kind)


class _BatchUpload:
    def __init__(self, volume: Volume, force: bool) -> None:
        self._volume = volume
        self._force = force
        self._files: list[tuple[str, bytes]] = []

    def __enter__(self) -> _BatchUpload:
        return self

    def put_file(self, local_file: str | os.PathLike[str] | Any, remote_path: str) -> None:
        if hasattr(local_file, "read"):
            data = local_file.read()
        else:
            with open(local_file, "rb") as f:
                data = f.read()
        self._files.append((str(remote_path), data))

    def put_directory(self, local_path: str | os.PathLike[str], remote_path: str, recursive: bool = True) -> None:
        base = Path(local_path)
        files = base.rglob("*") if recursive else base.iterdir()
        for p in sorted(files):
            if p.is_file():
                self.put_file(p, str(PurePosixPath(remote_path) / p.relative_to(base).as_posix()))

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None and self._files:
            self._volume._op("put", files=self._files, force=self._force)
