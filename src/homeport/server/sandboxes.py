"""Sandboxes: containers driven interactively by a client (`modal.Sandbox`).

A sandbox is a container of the backend like a function's, started from the same image, view and
environment machinery (`Launcher`), but its process is a small agent (`homeport.runtime._sandbox_agent`)
rather than the function runtime. The agent connects back to the control plane (hello role "sandbox"),
runs the sandbox's own command and every `exec`, and streams their output as it arrives. This module
relays between clients and agents: a client's exec goes to the agent, the exec's output frames go to the
client that started it; file operations run in the agent, inside the container's own view. What a
sandbox's container starts from (its image, network, spec and tunnels) is `sandbox_launch`'s.

Lifecycle: a sandbox ends when its command exits (its exit code), at its `timeout` (124), when it is
terminated or its app stops (137), or after `idle_timeout` seconds without an exec or input (124).
Tunnels: a TCP port on 127.0.0.1 of this machine per port the sandbox opens, forwarded to a Unix socket
the agent serves and bridges to the port inside the container.

Network: a namespace of its own per sandbox where the backend can make one, so its ports are its own
and the machine's services out of its reach; what it reaches outside goes through its egress proxy
(`egress`: HTTP and HTTPS, the allowlists). `block_network` leaves only loopback.

Output: an exec's streams are flow-controlled end to end (`_sandbox_agent.WINDOW`, acknowledged by
the reading client through `notify`), so what the control plane holds of them is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any

from .. import _protocol as P
from .._wire import FramedProtocol
from ..backends import Backend, ExitInfo
from ..exception import AlreadyExistsError, InvalidError, NotFoundError, error_from_code
from .records import Peer, Registry
from .sandbox_launch import SandboxLauncher, SandboxRecord

log = logging.getLogger("homeport.server.sandboxes")

RC_TIMEOUT = 124
RC_TERMINATED = 137
STOP_GRACE = 2.0
MAIN_BUFFER_BYTES = 16 << 20  # of the sandbox's own command's output kept for `sb.stdout.read()`


class Sandboxes:
    """The sandbox service: clients' operations, the relay to and from each sandbox's agent, and ending.

    Its collaborators: the live apps and containers (`registry`), what starts a sandbox's container
    (`launcher`), the backend that runs it, `serving` (set once containers can connect), and `spawn`
    for background work the control plane owns."""

    def __init__(self, registry: Registry, launcher: SandboxLauncher, backend: Backend, serving: asyncio.Event,
                 spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task]) -> None:
        self.registry = registry
        self.launcher = launcher
        self.backend = backend
        self.serving = serving
        self.spawn = spawn
        self.by_id: dict[str, SandboxRecord] = {}
        self._request_ids = itertools.count(1)
        self._exec_ids = itertools.count(1)

    # --- client operations ---------------------------------------------------------------------------
    async def op(self, peer: Peer, msg: Any) -> Any:
        """A client's operation (plain data or typed: checked as its operation's type, MalformedMessage
        naming the field where it is not: answered `invalid`)."""
        try:
            req = P.check_sandbox(msg)
        except P.MalformedMessage as exc:
            raise InvalidError(str(exc)) from None
        if isinstance(req, P.SandboxCreate):
            return await self.create(peer, req)
        if isinstance(req, P.SandboxList):
            tags = req.tags or {}
            return [self.describe(r) for r in self.by_id.values()
                    if r.running and (not req.app_id or r.app_id == req.app_id)
                    and all(r.tags.get(k) == v for k, v in tags.items())]
        if isinstance(req, P.SandboxFromName):
            app_id = self.registry.deployed_by_name(req.app_name)
            for r in self.by_id.values():
                if app_id is not None and r.running and r.name == req.name and r.app_id == app_id:
                    return self.describe(r)
            raise NotFoundError(f"Sandbox with name '{req.name}' not found in app '{req.app_name}'")
        rec = self.by_id.get(req.sandbox or "")
        if rec is None:
            raise NotFoundError(f"Sandbox {req.sandbox} not found")
        if isinstance(req, P.SandboxGet):
            return self.describe(rec)
        if isinstance(req, P.SandboxWait):
            if rec.running:
                assert rec.exited is not None
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(rec.exited), req.timeout or None)
            return self.describe(rec)
        if isinstance(req, P.SandboxTerminate):
            self.end(rec, "terminated")
            if req.wait and rec.exited is not None:
                await asyncio.shield(rec.exited)
            return self.describe(rec)
        if isinstance(req, P.SandboxSetTags):
            rec.tags = dict(req.tags)
            return None
        if isinstance(req, P.SandboxMainRead):
            return await self._main_read(rec, req.fd, req.offset)
        if isinstance(req, P.SandboxTunnels):
            return {str(port): host_port for port, (_s, host_port) in rec.tunnels.items()}
        if isinstance(req, (P.SandboxStdin, P.SandboxAck)):
            raise InvalidError(f"the sandbox operation {type(req).__name__} is sent without a request id")
        # Everything below talks to the agent.
        await self._agent_ready(rec)
        rec.last_active = time.monotonic()
        if isinstance(req, P.SandboxExec):
            # The client names it (and watches for its output) before its output can arrive.
            exec_id = req.exec or f"ex-{next(self._exec_ids)}{secrets.token_hex(3)}"
            if exec_id in rec.execs or exec_id == P.SANDBOX_MAIN:
                raise InvalidError(f"exec id {exec_id} is in use")
            rec.execs[exec_id] = peer
            try:
                await self._ask(rec, P.AgentExec(
                    exec=exec_id, argv=req.argv, workdir=req.workdir, pty=req.pty, stdout=req.stdout,
                    stderr=req.stderr, timeout=req.timeout,
                    env=self.launcher.environment(req.secret_refs, req.env)))
            except BaseException:
                rec.execs.pop(exec_id, None)
                raise
            return exec_id
        if isinstance(req, P.SandboxFs):
            return await self._ask(rec, P.AgentFs(action=req.action, path=req.path, data=req.data,
                                                  parents=req.parents, recursive=req.recursive),
                                   timeout=req.timeout or 120)
        if isinstance(req, P.SandboxProbe):
            return await self._ask(rec, P.AgentProbe(port=req.port, argv=req.argv), timeout=req.timeout or 120)
        raise InvalidError(f"unknown sandbox operation {type(req).__name__}")

    def notify(self, peer: Peer, msg: Any) -> None:
        """What a client sends without a reply: input for an exec (`stdin`: the order of the connection
        is the order of the bytes), or how much of an exec's output its reader consumed (`ack`: the
        agent reads on, see `_sandbox_agent.WINDOW`). A malformed one is dropped (nobody to answer)."""
        try:
            req = P.check_sandbox(msg)
        except P.MalformedMessage as exc:
            log.warning("dropped a malformed sandbox message: %s", exc)
            return
        rec = self.by_id.get(req.sandbox or "")
        if rec is None or not rec.running:
            return
        if isinstance(req, P.SandboxAck):
            # Only the client reading the exec: another cannot make its output pile up there.
            if rec.execs.get(req.exec) is peer and rec.proto is not None:
                rec.proto.send(P.AgentAck(exec=req.exec, fd=req.fd, n=req.n))
            return
        if not isinstance(req, P.SandboxStdin):
            return
        rec.last_active = time.monotonic()
        frame = P.AgentStdin(exec=req.exec, data=req.data, eof=req.eof)
        if rec.proto is None or rec.connected is None or not rec.connected.done():
            rec.stdin_backlog.append(frame)  # for the command, before its agent is ready: sent once it is
            return
        rec.proto.send(frame)

    def peer_closed(self, peer: Peer) -> None:
        """A client left: the execs it was reading run on unwatched (no window to wait for)."""
        for rec in self.by_id.values():
            if rec.running and rec.proto is not None:
                for exec_id, reader in rec.execs.items():
                    if reader is peer:
                        rec.proto.send(P.AgentUnwatched(exec=exec_id))

    def describe(self, rec: SandboxRecord) -> P.SandboxInfo:
        return P.SandboxInfo(sandbox_id=rec.sandbox_id, app_id=rec.app_id, name=rec.name, tags=rec.tags,
                             returncode=rec.returncode, reason=rec.reason, created_at=rec.created_at,
                             error=rec.startup_error)

    async def create(self, peer: Peer, msg: P.SandboxCreate) -> P.SandboxInfo:
        app_id = msg.app_id
        if not app_id and peer.container_id is not None:
            own = self.registry.containers.get(peer.container_id)
            app_id = own.fn.app_id if own is not None else None
        if not app_id or app_id not in self.registry.apps:
            raise NotFoundError(f"App {app_id} is not running; create the Sandbox with a running app (`app=`)")
        name = msg.name
        if name and any(r.running and r.name == name and r.app_id == app_id for r in self.by_id.values()):
            raise AlreadyExistsError(f"Sandbox with name '{name}' already exists in this app")
        if msg.image is not None:
            msg = P.replace(msg, image_id=await self.launcher.build_image(peer, msg.image), image=None)
        sid = f"sb-{secrets.token_hex(8)}"
        rec = SandboxRecord(sid, app_id, name, dict(msg.tags or {}), secrets.token_urlsafe(16),
                            float(msg.timeout or 300), msg.idle_timeout, list(msg.ports or ()), msg)
        loop = asyncio.get_running_loop()
        rec.connected = loop.create_future()
        rec.exited = loop.create_future()
        self.by_id[sid] = rec
        try:
            await self.launcher.network(rec, msg)
            spec = await self.launcher.spec(rec, msg)
        except BaseException:
            self.by_id.pop(sid, None)
            self.launcher.release(rec)
            raise
        await self.serving.wait()
        try:
            rec.pid = await self.backend.start(spec, self._on_output, self._on_exit)
        except Exception as exc:
            self.by_id.pop(sid, None)
            self.launcher.release(rec)
            raise InvalidError(f"the sandbox could not start: {exc}") from None
        rec.timers.append(loop.call_later(rec.timeout, self.end, rec, "timeout"))
        if rec.idle_timeout:
            rec.timers.append(loop.call_later(1.0, self._check_idle, rec))
        for port in rec.ports:
            await self.launcher.open_tunnel(rec, port)
        return self.describe(rec)

    async def _main_read(self, rec: SandboxRecord, fd: int, offset: int) -> P.MainChunk:
        while True:
            buf = rec.main_out[fd]
            start = offset - rec.main_dropped[fd]
            if start < 0:
                start = 0
            if start < len(buf) or rec.main_done:
                data = bytes(buf[start:])
                return P.MainChunk(data=data, offset=rec.main_dropped[fd] + start + len(data),
                                   eof=rec.main_done and start + len(data) >= len(buf))
            rec.main_changed.clear()
            await rec.main_changed.wait()

    # --- the agent -----------------------------------------------------------------------------------
    async def _agent_ready(self, rec: SandboxRecord) -> None:
        if not rec.running:
            raise InvalidError(f"Sandbox {rec.sandbox_id} has already finished (return code {rec.returncode})")
        assert rec.connected is not None and rec.exited is not None
        done, _ = await asyncio.wait([rec.connected, rec.exited], timeout=120, return_when=asyncio.FIRST_COMPLETED)
        if rec.connected not in done:
            raise InvalidError(f"Sandbox {rec.sandbox_id} finished before it could run this "
                               f"({rec.startup_error or 'its agent never connected'})")

    async def _ask(self, rec: SandboxRecord, msg: P.AgentRequest, timeout: float = 60) -> Any:
        if rec.proto is None:
            raise InvalidError(f"Sandbox {rec.sandbox_id} is not running")
        rid = next(self._request_ids)
        fut = asyncio.get_running_loop().create_future()
        rec.pending[rid] = fut
        msg.id = rid
        rec.proto.send(msg)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            rec.pending.pop(rid, None)

    def agent_hello(self, proto: FramedProtocol, hello: P.Hello) -> bool:
        rec = self.by_id.get(hello.cid or "")
        # Once only: a process in the sandbox that read the token from the agent's environment cannot
        # take its place later, even after the agent's connection is gone.
        if rec is None or not rec.running or rec.greeted \
                or not secrets.compare_digest(rec.token, hello.token or ""):
            return False
        rec.greeted = True
        rec.proto = proto
        return True

    def agent_message(self, sid: str, raw: Any) -> None:
        """What a sandbox's agent sent. It runs in the sandbox, with the sandbox's code: a message that
        does not decode as its type is dropped."""
        rec = self.by_id.get(sid)
        if rec is None:
            return
        try:
            msg = P.check_from_agent(raw)
        except P.MalformedMessage as exc:
            log.warning("sandbox %s: dropped a malformed message from its agent: %s", sid, exc)
            return
        if isinstance(msg, P.Result):
            rid = msg.id  # from the sandbox: anything
            fut = rec.pending.pop(rid, None) if isinstance(rid, int) else None
            if fut is not None and not fut.done():
                if msg.ok:
                    fut.set_result(msg.v)
                else:
                    fut.set_exception(error_from_code(msg.code or P.errors.INTERNAL, msg.msg or ""))
        elif isinstance(msg, P.Ready):
            if rec.connected is not None and not rec.connected.done():
                rec.connected.set_result(None)
            backlog, rec.stdin_backlog = rec.stdin_backlog, []
            for frame in backlog:
                if rec.proto is not None:
                    rec.proto.send(frame)
        elif isinstance(msg, (P.SandboxOut, P.SandboxExit)):
            exec_id = msg.exec
            if exec_id == P.SANDBOX_MAIN:
                self._main_output(rec, msg)
                return
            rec.last_active = time.monotonic()
            out = isinstance(msg, P.SandboxOut)
            peer = rec.execs.get(exec_id) if out else rec.execs.pop(exec_id, None)
            if peer is not None and not peer.proto.is_closing:
                peer.proto.send(msg)
            elif isinstance(msg, P.SandboxOut) and msg.fd in (1, 2) and rec.proto is not None:
                # nobody reads it any more: let it run on
                rec.proto.send(P.AgentAck(exec=exec_id, fd=msg.fd, n=len(msg.data)))  # type: ignore[arg-type]

    def _main_output(self, rec: SandboxRecord, msg: P.SandboxOut | P.SandboxExit) -> None:
        if isinstance(msg, P.SandboxExit):
            rec.main_done = True
        elif msg.fd in (1, 2):
            buf = rec.main_out[msg.fd]
            buf += msg.data
            if len(buf) > MAIN_BUFFER_BYTES:
                drop = len(buf) - MAIN_BUFFER_BYTES
                del buf[:drop]
                rec.main_dropped[msg.fd] += drop
        rec.main_changed.set()

    def agent_closed(self, sid: str) -> None:
        rec = self.by_id.get(sid)
        if rec is not None:
            rec.proto = None

    # --- ending --------------------------------------------------------------------------------------
    def end(self, rec: SandboxRecord, reason: str) -> None:
        if not rec.running or rec.reason is not None:
            return
        rec.reason = reason
        log.info("sandbox %s: %s", rec.sandbox_id, reason)
        self.spawn(self.backend.stop(rec.sandbox_id, STOP_GRACE))

    def _check_idle(self, rec: SandboxRecord) -> None:
        if not rec.running:
            return
        if not rec.execs and time.monotonic() - rec.last_active > float(rec.idle_timeout or 0):
            self.end(rec, "idle")
            return
        rec.timers.append(asyncio.get_running_loop().call_later(1.0, self._check_idle, rec))

    def app_stopped(self, app_id: str) -> None:
        for rec in list(self.by_id.values()):
            if rec.app_id == app_id:
                self.end(rec, "terminated")

    def _on_output(self, sid: str, fd: int, line: bytes) -> None:
        """The agent's own output (not its commands'): the app's log, and the server's."""
        log.info("sandbox %s: %s", sid, line.decode(errors="replace").rstrip())
        rec = self.by_id.get(sid)
        if rec is not None and not rec.startup_error and fd == 2:
            rec.startup_error = line.decode(errors="replace").strip()

    def _on_exit(self, sid: str, info: ExitInfo) -> None:
        rec = self.by_id.get(sid)
        if rec is None:
            return
        if rec.reason in ("timeout", "idle"):
            rc = RC_TIMEOUT
        elif rec.reason == "terminated":
            rc = RC_TERMINATED
        elif info.signal is not None:
            rc = 128 + info.signal
        else:
            rc = info.returncode if info.returncode is not None else RC_TERMINATED
        rec.returncode = rc
        rec.main_done = True
        rec.main_changed.set()
        for timer in rec.timers:
            timer.cancel()
        self.launcher.release(rec)
        for exec_id, peer in list(rec.execs.items()):
            peer.proto.send(P.SandboxExit(exec=exec_id, code=rc))
        rec.execs.clear()
        for fut in rec.pending.values():
            if not fut.done():
                fut.set_exception(InvalidError(f"Sandbox {sid} finished (return code {rc})"))
        if rec.exited is not None and not rec.exited.done():
            rec.exited.set_result(rc)
        if rec.connected is not None and not rec.connected.done():
            rec.connected.cancel()
        log.info("sandbox %s exited: %s -> %s", sid, info.describe(), rc)
        # Kept for a while, so that `wait`, `poll` and `from_id` still see how it ended.
        asyncio.get_running_loop().call_later(600, self.by_id.pop, sid, None)

    def container_list(self) -> list[dict[str, Any]]:
        now = time.time()
        return [{"container_id": r.sandbox_id, "app_id": r.app_id,
                 "app_name": (self.registry.apps.get(r.app_id) or {}).get("name"), "function": "sandbox",
                 "start_failures": 0, "state": "running", "pid": r.pid, "uptime": now - r.created_at,
                 "inputs_served": 0, "running": len(r.execs), "timeline": {}}
                for r in self.by_id.values() if r.running]


