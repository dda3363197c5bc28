"""Sandboxes: containers driven interactively by a client (`modal.Sandbox`).

A sandbox is a container of the backend like a function's, started from the same image, view and
environment machinery (`Launcher`), but its process is a small agent (`homeport.runtime._sandbox_agent`)
rather than the function runtime. The agent connects back to the control plane (hello role "sandbox"),
runs the sandbox's own command and every `exec`, and streams their output as it arrives. This module
relays between clients and agents: a client's exec goes to the agent, the exec's output frames go to the
client that started it; file operations run in the agent, inside the container's own view.

Lifecycle: a sandbox ends when its command exits (its exit code), at its `timeout` (124), when it is
terminated or its app stops (137), or after `idle_timeout` seconds without an exec or input (124).
Tunnels: a TCP port on 127.0.0.1 of this machine per port the sandbox opens, forwarded to a Unix socket
the agent serves and bridges to the port inside the container.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import posixpath
import secrets
import shutil
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import _protocol as P
from .._wire import relay
from ..backends import ContainerSpec, ExitInfo, Mount
from ..exception import AlreadyExistsError, InvalidError, NotFoundError

if TYPE_CHECKING:
    from .._wire import FramedProtocol
    from .records import Peer
    from .services import ControlPlane

log = logging.getLogger("homeport.server.sandboxes")

RC_TIMEOUT = 124
RC_TERMINATED = 137
STOP_GRACE = 2.0
MAIN_BUFFER_BYTES = 16 << 20  # of the sandbox's own command's output kept for `sb.stdout.read()`


@dataclass(eq=False)
class SandboxRecord:
    sandbox_id: str
    app_id: str
    name: str | None
    tags: dict[str, str]
    token: str
    timeout: float
    idle_timeout: float | None
    ports: list[int]
    config: dict[str, Any]
    created_at: float = field(default_factory=time.time)
    pid: int | None = None
    proto: FramedProtocol | None = None
    connected: asyncio.Future | None = None
    exited: asyncio.Future | None = None  # result: the return code
    returncode: int | None = None
    reason: str | None = None  # "timeout" | "terminated" | "idle" once the control plane ends it
    execs: dict[str, Peer] = field(default_factory=dict)  # running execs -> the client that reads them
    pending: dict[int, asyncio.Future] = field(default_factory=dict)  # requests to the agent
    main_out: dict[int, bytearray] = field(default_factory=lambda: {1: bytearray(), 2: bytearray()})
    main_dropped: dict[int, int] = field(default_factory=lambda: {1: 0, 2: 0})
    main_done: bool = False
    main_changed: asyncio.Event = field(default_factory=asyncio.Event)
    last_active: float = field(default_factory=time.monotonic)
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    tunnels: dict[int, tuple[asyncio.AbstractServer, int]] = field(default_factory=dict)
    scratch: str | None = None  # a writable directory bound at `workdir`, removed at exit
    startup_error: str | None = None
    stdin_backlog: list[dict[str, Any]] = field(default_factory=list)
    greeted: bool = False  # its agent said hello (accepted once)

    @property
    def running(self) -> bool:
        return self.returncode is None


class Sandboxes:
    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.by_id: dict[str, SandboxRecord] = {}
        self._request_ids = itertools.count(1)
        self._exec_ids = itertools.count(1)

    # --- client operations ---------------------------------------------------------------------------
    async def op(self, peer: Peer, msg: dict[str, Any]) -> Any:
        op = msg["op"]
        if op == "create":
            return await self.create(peer, msg)
        if op == "list":
            return [self.describe(r) for r in self.by_id.values()
                    if r.running and (not msg.get("app_id") or r.app_id == msg["app_id"])
                    and all(r.tags.get(k) == v for k, v in (msg.get("tags") or {}).items())]
        if op == "from_name":
            app_id = self.cp._deployed_by_name(msg["app_name"])
            for r in self.by_id.values():
                if app_id is not None and r.running and r.name == msg["name"] and r.app_id == app_id:
                    return self.describe(r)
            raise NotFoundError(f"Sandbox with name '{msg['name']}' not found in app '{msg['app_name']}'")
        rec = self.by_id.get(msg.get("sandbox", ""))
        if rec is None:
            raise NotFoundError(f"Sandbox {msg.get('sandbox')} not found")
        if op == "get":
            return self.describe(rec)
        if op == "wait":
            if rec.running:
                assert rec.exited is not None
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(rec.exited), msg.get("timeout") or None)
            return self.describe(rec)
        if op == "terminate":
            self.end(rec, "terminated")
            if msg.get("wait") and rec.exited is not None:
                await asyncio.shield(rec.exited)
            return self.describe(rec)
        if op == "set_tags":
            rec.tags = dict(msg["tags"])
            return None
        if op == "main_read":
            return await self._main_read(rec, int(msg["fd"]), int(msg["offset"]))
        if op == "tunnels":
            return {str(port): host_port for port, (_s, host_port) in rec.tunnels.items()}
        # Everything below talks to the agent.
        await self._agent_ready(rec)
        rec.last_active = time.monotonic()
        if op == "exec":
            # The client names it (and watches for its output) before its output can arrive.
            exec_id = str(msg.get("exec") or f"ex-{next(self._exec_ids)}{secrets.token_hex(3)}")
            if exec_id in rec.execs or exec_id == P.SANDBOX_MAIN:
                raise InvalidError(f"exec id {exec_id} is in use")
            rec.execs[exec_id] = peer
            try:
                await self._ask(rec, {"op": "exec", "exec": exec_id, "argv": msg["argv"],
                                      "env": self.cp._function_env({"secret_refs": msg.get("secret_refs"),
                                                                    "env": msg.get("env")}),
                                      "workdir": msg.get("workdir"), "pty": bool(msg.get("pty")),
                                      "stdout": msg.get("stdout", "pipe"), "stderr": msg.get("stderr", "pipe"),
                                      "timeout": msg.get("timeout")})
            except BaseException:
                rec.execs.pop(exec_id, None)
                raise
            return exec_id
        if op in ("fs", "probe"):
            return await self._ask(rec, {**msg, "t": P.SANDBOX_AGENT, "op": op}, timeout=msg.get("timeout") or 120)
        raise InvalidError(f"unknown sandbox operation {op!r}")

    def stdin(self, msg: dict[str, Any]) -> None:
        """Input for an exec (no reply: the order of the connection is the order of the bytes)."""
        rec = self.by_id.get(msg.get("sandbox", ""))
        if rec is None or not rec.running:
            return
        rec.last_active = time.monotonic()
        frame = {"t": P.SANDBOX_AGENT, "op": "stdin", "exec": msg["exec"], "data": msg.get("data") or b"",
                 "eof": bool(msg.get("eof"))}
        if rec.proto is None or rec.connected is None or not rec.connected.done():
            rec.stdin_backlog.append(frame)  # for the command, before its agent is ready: sent once it is
            return
        rec.proto.send(frame)

    def describe(self, rec: SandboxRecord) -> dict[str, Any]:
        return {"sandbox_id": rec.sandbox_id, "app_id": rec.app_id, "name": rec.name, "tags": rec.tags,
                "returncode": rec.returncode, "reason": rec.reason, "created_at": rec.created_at,
                "error": rec.startup_error}

    async def create(self, peer: Peer, msg: dict[str, Any]) -> dict[str, Any]:
        cp = self.cp
        app_id = msg.get("app_id")
        if not app_id and peer.container_id is not None:
            own = cp.containers.get(peer.container_id)
            app_id = own.fn.app_id if own is not None else None
        if not app_id or app_id not in cp.apps:
            raise NotFoundError(f"App {app_id} is not running; create the Sandbox with a running app (`app=`)")
        name = msg.get("name")
        if name and any(r.running and r.name == name and r.app_id == app_id for r in self.by_id.values()):
            raise AlreadyExistsError(f"Sandbox with name '{name}' already exists in this app")
        sid = f"sb-{secrets.token_hex(8)}"
        rec = SandboxRecord(sid, app_id, name, dict(msg.get("tags") or {}), secrets.token_urlsafe(16),
                            float(msg.get("timeout") or 300), msg.get("idle_timeout"),
                            [int(p) for p in msg.get("ports") or ()], msg)
        loop = asyncio.get_running_loop()
        rec.connected = loop.create_future()
        rec.exited = loop.create_future()
        self.by_id[sid] = rec
        try:
            spec = await self._spec(rec, msg)
        except BaseException:
            self.by_id.pop(sid, None)
            raise
        await cp.serving.wait()
        try:
            rec.pid = await cp.backend.start(spec, self._on_output, self._on_exit)
        except Exception as exc:
            self.by_id.pop(sid, None)
            if rec.scratch:
                shutil.rmtree(rec.scratch, ignore_errors=True)
            raise InvalidError(f"the sandbox could not start: {exc}") from None
        rec.timers.append(loop.call_later(rec.timeout, self.end, rec, "timeout"))
        if rec.idle_timeout:
            rec.timers.append(loop.call_later(1.0, self._check_idle, rec))
        for port in rec.ports:
            await self._open_tunnel(rec, port)
        return self.describe(rec)

    async def _spec(self, rec: SandboxRecord, msg: dict[str, Any]) -> ContainerSpec:
        cp = self.cp
        launcher = cp.launcher
        image = cp.images.get(msg["image_id"]) if msg.get("image_id") else await cp.images.default_image()
        env = dict(launcher.image_environ(image))
        env.update(cp._function_env({"secret_refs": msg.get("secret_refs"), "env": msg.get("env")}))
        agent_config = {"argv": list(msg.get("argv") or ()), "pty": bool(msg.get("pty")),
                        "block_network": bool(msg.get("block_network")), "workdir": msg.get("workdir"),
                        "tunnels": {str(p): self._socket(rec, p) for p in rec.ports}}
        env.update({
            "PYTHONUNBUFFERED": "1",
            P.ENV_SERVER_ADDRESS: cp.address,
            P.ENV_CONTAINER_ID: rec.sandbox_id,
            P.ENV_CONTAINER_TOKEN: rec.token,
            P.ENV_MODAL_IMAGE_ID: image.image_id,
            "MODAL_SANDBOX_ID": rec.sandbox_id,
            P.ENV_SANDBOX: json.dumps(agent_config),
        })
        mounts = image.container_mounts()
        mounts += [Mount(host, target) for host, target in cp._function_mounts({"volumes": msg.get("volumes")})]
        workdir = msg.get("workdir")
        if workdir is not None and (not isinstance(workdir, str) or not workdir.startswith("/")
                                    or posixpath.normpath(workdir) != workdir):
            raise InvalidError(f"workdir must be a canonical absolute path, got: {workdir!r}")
        rootfs = image.rootfs(workdir or image.cwd(None))
        cwd = None
        if rec.ports:  # its own directory of the shared one, where its tunnels' sockets are (`_socket`)
            os.makedirs(os.path.join(cp.web_dir, rec.sandbox_id), mode=0o700, exist_ok=True)
        if rootfs is not None:
            mounts += image.rootfs_mounts([], cp.address, launcher.images.runtime_path())
            if rec.ports:
                mounts.append(Mount(os.path.join(cp.web_dir, rec.sandbox_id), os.path.join(cp.web_dir, rec.sandbox_id)))
        else:
            cwd = image.cwd(None) or "/"
            exists = os.path.isdir(workdir) if workdir else True  # noqa: ASYNC240 - one stat
            top = "/" + workdir.strip("/").split("/")[0] if workdir else "/"
            if workdir and not exists and top != "/tmp" and os.path.exists(top):  # noqa: ASYNC240
                raise InvalidError(
                    f"workdir {workdir} cannot be made: {top} is this machine's directory, read-only in a sandbox "
                    "whose image has no root file system of its own; use a new top-level directory (/app), one "
                    "under /tmp, or an image with its own root file system (apt_install, run_commands)")
            if workdir and not exists and top != "/tmp" and not any(m.target == workdir for m in mounts):
                # The host is read-only inside: a working directory of its own, gone with the sandbox.
                rec.scratch = os.path.join(cp.scratch, f"{rec.sandbox_id}-workdir")
                os.makedirs(rec.scratch, mode=0o700)
                mounts.append(Mount(rec.scratch, workdir))
        python = image.argv()[0]
        return ContainerSpec(
            container_id=rec.sandbox_id, app_id=rec.app_id, function_tag="sandbox",
            argv=(python, "-m", "homeport.runtime._sandbox_agent"), env=env, cwd=cwd,
            memory_limit_mib=msg.get("memory_limit_mib"), cpu_limit=msg.get("cpu_limit"),
            mounts=tuple(mounts), rootfs=rootfs,
            # What the sandbox writes stays in it: the host's directories are read-only, /tmp its own
            # (but for the runtime's packages, which may be under the host's /tmp).
            host_read_only=rootfs is None,
            code=launcher.images.runtime_sources(env.get(P.ENV_RUNTIME_PATH, "")) if rootfs is None else (),
            private_network=bool(msg.get("block_network")),
        )

    def _socket(self, rec: SandboxRecord, port: int) -> str:
        return os.path.join(self.cp.web_dir, rec.sandbox_id, f"p{port}")  # in its own directory (`_spec`)

    async def _open_tunnel(self, rec: SandboxRecord, port: int) -> None:
        path = self._socket(rec, port)

        async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await relay(reader, writer, lambda: asyncio.open_unix_connection(path))

        server = await asyncio.start_server(forward, "127.0.0.1", 0)
        rec.tunnels[port] = (server, server.sockets[0].getsockname()[1])

    async def _main_read(self, rec: SandboxRecord, fd: int, offset: int) -> dict[str, Any]:
        while True:
            buf = rec.main_out[fd]
            start = offset - rec.main_dropped[fd]
            if start < 0:
                start = 0
            if start < len(buf) or rec.main_done:
                data = bytes(buf[start:])
                return {"data": data, "offset": rec.main_dropped[fd] + start + len(data),
                        "eof": rec.main_done and start + len(data) >= len(buf)}
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

    async def _ask(self, rec: SandboxRecord, msg: dict[str, Any], timeout: float = 60) -> Any:
        if rec.proto is None:
            raise InvalidError(f"Sandbox {rec.sandbox_id} is not running")
        rid = next(self._request_ids)
        fut = asyncio.get_running_loop().create_future()
        rec.pending[rid] = fut
        rec.proto.send({**msg, "t": P.SANDBOX_AGENT, "id": rid})
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            rec.pending.pop(rid, None)

    def agent_hello(self, proto: FramedProtocol, msg: dict[str, Any]) -> bool:
        rec = self.by_id.get(msg.get("cid", ""))
        # Once only: a process in the sandbox that read the token from the agent's environment cannot
        # take its place later, even after the agent's connection is gone.
        if rec is None or not rec.running or rec.greeted \
                or not secrets.compare_digest(rec.token, str(msg.get("token", ""))):
            return False
        rec.greeted = True
        rec.proto = proto
        return True

    def agent_message(self, sid: str, msg: dict[str, Any]) -> None:
        rec = self.by_id.get(sid)
        if rec is None:
            return
        t = msg.get("t")
        if t == P.RESULT:
            fut = rec.pending.pop(msg.get("id"), None)
            if fut is not None and not fut.done():
                if msg.get("ok"):
                    fut.set_result(msg.get("v"))
                else:
                    from ..exception import error_from_code

                    fut.set_exception(error_from_code(msg.get("code", "internal"), msg.get("msg", "")))
        elif t == "ready":
            if rec.connected is not None and not rec.connected.done():
                rec.connected.set_result(None)
            backlog, rec.stdin_backlog = rec.stdin_backlog, []
            for frame in backlog:
                if rec.proto is not None:
                    rec.proto.send(frame)
        elif t == "startup_error":
            rec.startup_error = msg.get("msg")
        elif t in (P.SANDBOX_OUT, P.SANDBOX_EXIT):
            exec_id = msg["exec"]
            if exec_id == P.SANDBOX_MAIN:
                self._main_output(rec, msg)
                return
            rec.last_active = time.monotonic()
            peer = rec.execs.get(exec_id) if t == P.SANDBOX_OUT else rec.execs.pop(exec_id, None)
            if peer is not None:
                peer.proto.send(msg)

    def _main_output(self, rec: SandboxRecord, msg: dict[str, Any]) -> None:
        if msg["t"] == P.SANDBOX_EXIT:
            rec.main_done = True
        else:
            buf = rec.main_out[msg["fd"]]
            buf += msg["data"]
            if len(buf) > MAIN_BUFFER_BYTES:
                drop = len(buf) - MAIN_BUFFER_BYTES
                del buf[:drop]
                rec.main_dropped[msg["fd"]] += drop
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
        self.cp.spawn(self.cp.backend.stop(rec.sandbox_id, STOP_GRACE))

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
        for server, _port in rec.tunnels.values():
            server.close()
        for port in rec.ports:
            with contextlib.suppress(OSError):
                os.unlink(self._socket(rec, port))
        if rec.scratch:
            shutil.rmtree(rec.scratch, ignore_errors=True)
        for exec_id, peer in list(rec.execs.items()):
            peer.proto.send({"t": P.SANDBOX_EXIT, "exec": exec_id, "code": rc})
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
                 "app_name": (self.cp.apps.get(r.app_id) or {}).get("name"), "function": "sandbox",
                 "start_failures": 0, "state": "running", "pid": r.pid, "uptime": now - r.created_at,
                 "inputs_served": 0, "running": len(r.execs), "timeline": {}}
                for r in self.by_id.values() if r.running]


