"""`sb.filesystem`: a sandbox's files, read and written as the sandbox sees them."""

from __future__ import annotations

import os
from typing import Any, Protocol

from . import _protocol as P
from ._bridge import aio_method
from ._sandbox_support import request, unimplemented
from .exception import InvalidError


class _Owner(Protocol):
    """The sandbox whose files these are (a `Sandbox`)."""

    _id: str

    def _check(self) -> None: ...


class SandboxFilesystem:
    """The sandbox's files, as the sandbox sees them (`sb.filesystem`)."""

    def __init__(self, sandbox: _Owner) -> None:
        self._sb = sandbox

    async def _fs(self, action: P.FsAction, path: str, **extra: Any) -> Any:
        self._sb._check()
        if not isinstance(path, str) or not path.startswith("/"):
            raise InvalidError(f"Sandbox file paths must be absolute, got {path!r}")
        return await request(P.SandboxFs(sandbox=self._sb._id, action=action, path=path, **extra))

    @aio_method
    async def read_bytes(self, path: str) -> bytes:
        return await self._fs("read", path)

    @aio_method
    async def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return (await self._fs("read", path)).decode(encoding)

    @aio_method
    async def write_bytes(self, data: bytes, path: str) -> None:
        await self._fs("write", path, data=bytes(data))

    @aio_method
    async def write_text(self, data: str, path: str, encoding: str = "utf-8") -> None:
        await self._fs("write", path, data=data.encode(encoding))

    @aio_method
    async def copy_from_local(self, local_path: str | os.PathLike, remote_path: str) -> None:
        with open(local_path, "rb") as f:  # noqa: ASYNC230 - the caller's own local file
            data = f.read()
        await self._fs("write", remote_path, data=data)

    @aio_method
    async def copy_to_local(self, remote_path: str, local_path: str | os.PathLike) -> None:
        data = await self._fs("read", remote_path)
        with open(local_path, "wb") as f:  # noqa: ASYNC230 - the caller's own local file
            f.write(data)

    @aio_method
    async def list_files(self, path: str) -> list[dict[str, Any]]:
        return await self._fs("list", path)

    @aio_method
    async def make_directory(self, path: str, *, create_parents: bool = True) -> None:
        await self._fs("mkdir", path, parents=create_parents)

    @aio_method
    async def remove(self, path: str, *, recursive: bool = False) -> None:
        await self._fs("remove", path, recursive=recursive)

    @aio_method
    async def stat(self, path: str) -> dict[str, Any]:
        return await self._fs("stat", path)

    def watch(self, *args: Any, **kwargs: Any) -> Any:
        raise unimplemented("Sandbox.filesystem.watch")
