"""The commands of a build: run on this machine (uv, cp, debootstrap), or as a build container of a
backend (`RunContainer`), their output streamed line by line and its last lines kept for the error."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import deque
from collections.abc import Awaitable, Callable

from ..backends import Mount
from .errors import ImageBuildFailed

LogFn = Callable[[str, int], None]  # (line, fd)
# (argv, env, rootfs, mounts, out, timeout, cwd) -> exit code: runs a build step as a container of the
# backend; without a root file system (None) the host is read-only inside and only the mounts are writable.
RunContainer = Callable[[list[str], dict[str, str], str | None, list[Mount], LogFn, float, str | None],
                        Awaitable[int | None]]
TAIL_LINES = 40
INSTALL_TIMEOUT = 3600.0


class Tail:
    """A command's output passed on to `out`, its last `TAIL_LINES` lines kept for its error message."""

    def __init__(self, out: LogFn) -> None:
        self.lines: deque[str] = deque(maxlen=TAIL_LINES)
        self._out = out

    def __call__(self, line: str, fd: int) -> None:
        self.lines.append(line)
        self._out(line, fd)


async def run_command(argv: list[str], out: LogFn, what: str, env: dict[str, str] | None = None,
                      cwd: str | None = None, timeout: float = 600.0) -> None:
    """Run a build command, streaming its output; fail with its tail."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True,
        )
    except OSError as exc:
        raise ImageBuildFailed(f"{what} could not start: {exc}") from None
    tail = Tail(out)

    async def pump() -> None:
        assert proc.stdout is not None
        while True:
            line = await proc.stdout.readline()
            if not line:
                return
            tail(line.decode("utf-8", "replace").rstrip("\n"), 1)

    try:
        await asyncio.wait_for(asyncio.gather(pump(), proc.wait()), timeout)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise ImageBuildFailed(f"{what} did not finish within {timeout:g}s{tail_text(tail.lines)}") from None
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise ImageBuildFailed(f"{what} exited with code {proc.returncode}{tail_text(tail.lines)}")


def read_only_hint(tail: deque[str]) -> str:
    """What to do when a build step failed writing outside the image (EROFS in its output)."""
    line = next((line for line in reversed(tail) if "Read-only file system" in line), None)
    if line is None:
        return ""
    return (
        f": it wrote outside the image ({line.strip()}). In an image without its own root file system a "
        "build step can write only to the image's Python environment (sys.prefix), to files the image added "
        "with copy=True, and to /tmp, which is not kept. To keep files anywhere in the image, give it a "
        "root file system: put an apt_install(...) or run_commands(...) step before run_function, and its "
        "writes persist in the image"
    )


def tail_text(lines: deque[str]) -> str:
    if not lines:
        return " (no output)"
    return ". Last lines of its output:\n" + "\n".join("    " + line for line in lines)
