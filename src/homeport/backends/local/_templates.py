"""Template processes that local containers are forked from (see `homeport.runtime._template`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgpack

from .._base import TemplateSpec

log = logging.getLogger("homeport.backend.local")

PACKET = 1 << 16
START_TIMEOUT = 120.0  # a snapshot template runs the user's imports and snap hooks


class TemplateUnavailable(Exception):
    """This container cannot be forked from its template; the reason says why."""


@dataclass
class _Template:
    spec: TemplateSpec
    process: asyncio.subprocess.Process
    sock: socket.socket
    ready: asyncio.Future
    forks: dict[str, asyncio.Future] = field(default_factory=dict)  # cid -> pid
    children: set[str] = field(default_factory=set)
    last_used: float = field(default_factory=time.monotonic)
    reader: asyncio.Task | None = None
    pumps: list[asyncio.Task] = field(default_factory=list)


class Templates:
    """One template process per key; forks containers from it and reports their exits."""

    def __init__(self, scratch: str, on_child_exit: Callable[[str, int | None], None],
                 on_output: Callable[[str, int, bytes], None]) -> None:
        self._scratch = scratch
        self._on_child_exit = on_child_exit
        self._on_output = on_output
        self._templates: dict[str, _Template] = {}
        self._failed: dict[str, str] = {}
        self._starting: dict[str, asyncio.Task] = {}

    async def fork(self, spec: TemplateSpec, cid: str, env: dict[str, str], cwd: str | None,
                   out_w: int, err_w: int) -> int:
        if spec.key in self._failed:
            raise TemplateUnavailable(self._failed[spec.key])
        tpl = await self._get(spec)
        tpl.last_used = time.monotonic()
        fut = asyncio.get_running_loop().create_future()
        tpl.forks[cid] = fut
        msg = {"t": "fork", "cid": cid, "env": env, "cwd": cwd, "t0": time.time()}
        try:
            socket.send_fds(tpl.sock, [msgpack.packb(msg, use_bin_type=True)], [out_w, err_w])
        except OSError as exc:
            tpl.forks.pop(cid, None)
            raise TemplateUnavailable(f"the template process is gone ({exc})") from None
        pid = await fut
        tpl.children.add(cid)
        return pid

    async def warm(self, spec: TemplateSpec) -> None:
        tpl = await self._get(spec)
        tpl.last_used = time.monotonic()

    async def _get(self, spec: TemplateSpec) -> _Template:
        tpl = self._templates.get(spec.key)
        if tpl is not None and tpl.process.returncode is None:
            await tpl.ready
            return tpl
        task = self._starting.get(spec.key)
        if task is None:
            task = self._starting[spec.key] = asyncio.create_task(self._start(spec))
        try:
            return await asyncio.shield(task)
        finally:
            self._starting.pop(spec.key, None)

    async def _start(self, spec: TemplateSpec) -> _Template:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        first: dict = {}
        if spec.definition is not None:
            path = os.path.join(self._scratch, f"template-{spec.key[:32]}.defn")
            with open(path, "wb") as f:  # noqa: ASYNC230 - a small local file
                f.write(spec.definition)
            first["definition_path"] = path
        tag = f"template-{spec.key[:12]}"
        try:
            process = await asyncio.create_subprocess_exec(
                *spec.argv, "--template", str(child.fileno()),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env=spec.env, pass_fds=(child.fileno(),), start_new_session=True,
            )
        finally:
            child.close()
        parent.setblocking(False)
        loop = asyncio.get_running_loop()
        tpl = _Template(spec, process, parent, loop.create_future())
        self._templates[spec.key] = tpl
        tpl.pumps = [asyncio.create_task(self._pump(tag, fd, stream))
                     for fd, stream in ((1, process.stdout), (2, process.stderr))]
        tpl.reader = asyncio.create_task(self._read(tpl))
        parent.send(msgpack.packb(first, use_bin_type=True))
        try:
            await asyncio.wait_for(asyncio.shield(tpl.ready), START_TIMEOUT)
        except asyncio.TimeoutError:
            reason = f"the template did not become ready within {START_TIMEOUT:g}s"
            self._fail(tpl, reason)
            raise TemplateUnavailable(reason) from None
        except TemplateUnavailable as exc:
            self._failed[spec.key] = str(exc)
            raise
        log.info("template %s ready (%s)", spec.key[:12], "snapshot" if spec.definition else "runtime")
        return tpl

    async def _pump(self, tag: str, fd: int, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self._on_output(tag, fd, line)

    async def _read(self, tpl: _Template) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = await loop.sock_recv(tpl.sock, PACKET)
            except OSError:
                data = b""
            if not data:
                self._fail(tpl, "the template process exited")
                return
            msg = msgpack.unpackb(data, raw=False)
            t = msg["t"]
            if t == "ready":
                tpl.ready.set_result(None)
            elif t == "failed":
                self._fail(tpl, f"taking the snapshot failed: {msg['error']}")
                return
            elif t == "forked":
                fut = tpl.forks.pop(msg["cid"], None)
                if fut is not None and not fut.done():
                    fut.set_result(msg["pid"])
            elif t == "exit":
                tpl.children.discard(msg["cid"])
                tpl.last_used = time.monotonic()
                self._on_child_exit(msg["cid"], msg["code"])

    def _fail(self, tpl: _Template, reason: str) -> None:
        if self._templates.get(tpl.spec.key) is tpl:
            del self._templates[tpl.spec.key]
        if not tpl.ready.done():
            tpl.ready.set_exception(TemplateUnavailable(reason))
            tpl.ready.exception()  # retrieved: no "never retrieved" warning when nobody waits
        for fut in tpl.forks.values():
            if not fut.done():
                fut.set_exception(TemplateUnavailable(reason))
        tpl.forks.clear()
        for cid in list(tpl.children):  # orphans: their exits can no longer be observed through it
            self._on_child_exit(cid, None)
        tpl.children.clear()
        with contextlib.suppress(OSError):
            tpl.sock.close()
        with contextlib.suppress(ProcessLookupError):
            tpl.process.kill()

    def sweep(self, now: float) -> None:
        """Stop templates that have had no container for longer than their TTL."""
        for tpl in list(self._templates.values()):
            if not tpl.children and not tpl.forks and now - tpl.last_used > tpl.spec.ttl:
                log.info("stopping template %s: unused for %.0fs", tpl.spec.key[:12], now - tpl.last_used)
                self._stop(tpl)

    def _stop(self, tpl: _Template) -> None:
        self._templates.pop(tpl.spec.key, None)
        if tpl.reader is not None:
            tpl.reader.cancel()
        with contextlib.suppress(OSError):
            tpl.sock.send(msgpack.packb({"t": "stop"}))
        with contextlib.suppress(OSError):
            tpl.sock.close()

    async def close(self) -> None:
        procs = [t.process for t in self._templates.values()]
        for tpl in list(self._templates.values()):
            self._stop(tpl)
        for p in procs:
            try:
                await asyncio.wait_for(p.wait(), 5)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                await p.wait()
