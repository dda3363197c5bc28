"""The control plane's images: the shared builder (`homeport.image_builder`), its build steps run as
containers of this control plane's backend (`BuildContainers`).

The server's modules take the builder's names from here.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable

from ..backends import Backend, ContainerSpec, ExitInfo, Mount
from ..image_builder import BuiltImage, ImageBuilder, ImageBuildFailed, ImageUnsupported

__all__ = ["BuildContainers", "BuiltImage", "ImageBuildFailed", "ImageBuilder", "ImageUnsupported"]


class BuildContainers:
    """Image build steps run as containers of the backend: the `run_container` an `ImageBuilder` is given."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    async def __call__(self, argv: list[str], env: dict[str, str], rootfs: str | None,
                       mounts: list[Mount], out: Callable[[str, int], None], timeout: float,
                       cwd: str | None = None) -> int | None:
        """Run an image build step as a container of the backend; its exit code, None on timeout.
        Without `rootfs` it runs with the host read-only: only `mounts` can be written."""
        cid = f"build-{secrets.token_hex(6)}"
        exited: asyncio.Future[ExitInfo] = asyncio.get_running_loop().create_future()

        def on_output(_cid: str, fd: int, line: bytes) -> None:
            out(line.decode("utf-8", "replace").rstrip("\n"), fd)

        def on_exit(_cid: str, info: ExitInfo) -> None:
            if not exited.done():
                exited.set_result(info)

        spec = ContainerSpec(container_id=cid, app_id="", function_tag="image-build", argv=tuple(argv), env=env,
                             mounts=tuple(mounts), rootfs=rootfs, host_read_only=rootfs is None, cwd=cwd)
        await self.backend.start(spec, on_output, on_exit)
        try:
            info = await asyncio.wait_for(asyncio.shield(exited), timeout)
        except asyncio.TimeoutError:
            await self.backend.kill(cid)
            await exited
            return None
        except BaseException:
            await self.backend.kill(cid)
            raise
        if info.signal is not None:
            return 128 + info.signal
        return info.returncode
