"""`Volume`: a named, persistent file system mounted into a function's containers.

Only the definition exists so far: mounting volumes and their file operations are not built yet.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, NoReturn

from ._secret import check_object_name
from .exception import InvalidError, UnimplementedError

__all__ = ["Volume"]


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
        volume = cls._new(name=None, environment_name=environment_name, version=version, is_ephemeral=True)
        return contextlib.nullcontext(volume)

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

    def _not_built(self, method: str) -> NoReturn:
        raise UnimplementedError(
            f"Volume.{method}() is not supported by Homeport yet: volumes are not built. "
            "Remove the call, or keep the files in a local directory for now."
        )

    def commit(self) -> None:
        self._not_built("commit")

    def reload(self) -> None:
        self._not_built("reload")

    def read_file(self, path: str) -> Iterator[bytes]:
        self._not_built("read_file")

    def read_file_into_fileobj(self, path: str, fileobj: Any) -> int:
        self._not_built("read_file_into_fileobj")

    def listdir(self, path: str, *, recursive: bool = False) -> list[Any]:
        self._not_built("listdir")

    def iterdir(self, path: str, *, recursive: bool = True) -> Iterator[Any]:
        self._not_built("iterdir")

    def batch_upload(self, force: bool = False) -> Any:
        self._not_built("batch_upload")

    def remove_file(self, path: str, recursive: bool = False) -> None:
        self._not_built("remove_file")

    def copy_files(self, src_paths: list[str], dst_path: str, recursive: bool = False) -> None:
        self._not_built("copy_files")

    def info(self) -> Any:
        self._not_built("info")
