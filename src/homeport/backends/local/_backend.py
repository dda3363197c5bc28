"""The local backend: one supervised OS process (group) per container on this machine."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

from .._base import Backend, ContainerSpec, ExitCallback, ExitInfo, OutputCallback
from . import _sandbox

log = logging.getLogger("homeport.backend.local")


class _Proc:
    def __init__(self, spec: ContainerSpec, process: asyncio.subprocess.Process) -> None:
        self.spec = spec
        self.process = process
        self.tasks: list[asyncio.Task] = []
        self.kill_timer: asyncio.TimerHandle | None = None


class LocalBackend(Backend):
    name = "local"

    def __init__(self, scratch_dir: str | None = None) -> None:
        self._procs: dict[str, _Proc] = {}
        self._scratch = scratch_dir

    async def start(self, spec: ContainerSpec, on_output: OutputCallback, on_exit: ExitCallback) -> int:
        env = dict(spec.env)
        if self._scratch:
            # A private temporary directory per container, removed when it exits.
            tmp = os.path.join(self._scratch, spec.container_id)
            os.makedirs(tmp, mode=0o700, exist_ok=True)
            env["TMPDIR"] = tmp
        process = await asyncio.create_subprocess_exec(
            *_sandbox.command(spec),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=spec.cwd,
            start_new_session=True,  # its own process group, so stop() reaches its children too
        )
        proc = _Proc(spec, process)
        self._procs[spec.container_id] = proc
        for fd, stream in ((1, process.stdout), (2, process.stderr)):
            proc.tasks.append(asyncio.create_task(self._pump(spec.container_id, fd, stream, on_output)))
        proc.tasks.append(asyncio.create_task(self._wait(proc, on_exit)))
        return process.pid

    async def _pump(self, cid: str, fd: int, stream: asyncio.StreamReader, on_output: OutputCallback) -> None:
        while True:
            line = await stream.readline()
            if not line:
                return
            on_output(cid, fd, line)

    async def _wait(self, proc: _Proc, on_exit: ExitCallback) -> None:
        rc = await proc.process.wait()
        # Drain the pipes before reporting the exit, so the last lines are not lost.
        await asyncio.gather(*proc.tasks[:2], return_exceptions=True)
        if proc.kill_timer is not None:
            proc.kill_timer.cancel()
        self._kill_group(proc, signal.SIGKILL)  # leftovers of the container's process group
        self._procs.pop(proc.spec.container_id, None)
        if self._scratch:
            import shutil

            shutil.rmtree(os.path.join(self._scratch, proc.spec.container_id), ignore_errors=True)
        info = ExitInfo(rc, -rc) if rc < 0 else ExitInfo(rc, None)
        on_exit(proc.spec.container_id, info)

    def _kill_group(self, proc: _Proc, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.process.pid, sig)

    async def stop(self, container_id: str, grace: float) -> None:
        proc = self._procs.get(container_id)
        if proc is None or proc.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.process.send_signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        proc.kill_timer = loop.call_later(grace, self._kill_group, proc, signal.SIGKILL)

    async def kill(self, container_id: str) -> None:
        proc = self._procs.get(container_id)
        if proc is not None:
            self._kill_group(proc, signal.SIGKILL)

    async def close(self, grace: float) -> None:
        procs = list(self._procs.values())
        for p in procs:
            await self.stop(p.spec.container_id, grace)
        waits = [p.tasks[-1] for p in procs]
        if waits:
            await asyncio.wait(waits, timeout=grace + 5)
        for p in list(self._procs.values()):
            self._kill_group(p, signal.SIGKILL)
