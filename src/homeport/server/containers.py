"""Containers of function pools: starting them, their messages (ready, outputs, generator items,
released inputs, start-up failures), their output lines and their exit.

Decisions go to the scheduler through the `Executor`; outputs are delivered by `calls`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .. import _protocol as P
from .._wire import FramedProtocol
from ..backends import Backend, ExitInfo
from .calls import CallService
from .core.scheduler import FailInputs, RestartBackoff, StartContainer
from .executor import Executor
from .launch import Launcher
from .logfeed import LogFeed
from .observe import Observer
from .records import ContainerRecord, Peer, Registry
from .supervision import Supervisor

if TYPE_CHECKING:
    from .web import WebEndpoints

log = logging.getLogger("homeport.server")


class SandboxListing(Protocol):
    """What the container list asks of the sandbox service (`sandboxes.Sandboxes`): its sandboxes' rows."""

    def container_list(self) -> list[dict[str, Any]]: ...
_PONG = P.Pong()

# After a container process exits, how long to wait for its connection to deliver what it sent last.
CONNECTION_DRAIN_SECONDS = 2.0


class ContainerService:
    def __init__(self, registry: Registry, executor: Executor, backend: Backend, launcher: Launcher,
                 calls: CallService, supervisor: Supervisor, logs: LogFeed, observer: Observer,
                 spawn: Callable[[Any], asyncio.Task], serving: asyncio.Event,
                 web: Callable[[], WebEndpoints | None], app_stopped: Callable[[str], None],
                 sandboxes: SandboxListing, gpus: tuple) -> None:
        self.apps = registry.apps
        self.functions = registry.functions
        self.inputs = registry.inputs
        self.containers = registry.containers
        self.stopping_apps = registry.stopping_apps
        self.executor = executor
        self.backend = backend
        self.launcher = launcher
        self.calls = calls
        self.supervisor = supervisor
        self.logs = logs
        self.observer = observer
        self.spawn = spawn
        self.serving = serving  # set once containers can connect to the control plane's socket
        self._web = web
        self.app_stopped = app_stopped
        self.sandboxes = sandboxes
        self.gpus = gpus
        self.closing = False  # what its containers were running fails with why: the control plane stopped

    @property
    def web(self) -> WebEndpoints | None:
        return self._web()

    def start_container(self, ins: StartContainer) -> None:
        fn = self.functions[ins.pool]
        log.info("starting container %s for %s: %s", ins.container, fn.tag, ins.reason)
        rec = ContainerRecord(ins.container, fn, secrets.token_urlsafe(16), time.time(), gpus=ins.gpus)
        self.containers[ins.container] = rec

        async def start() -> None:
            await self.serving.wait()
            try:
                spec = await self.launcher.spec(fn, ins.container, rec.token, gpus=ins.gpus)
                rec.web_prefix = spec.env.get(P.ENV_WEB_SOCKET)
                rec.env = {k: v for k, v in spec.env.items() if k != P.ENV_CONTAINER_TOKEN}
                rec.pid = await self.backend.start(spec, self._on_container_output, self._on_container_exit)
            except Exception as exc:  # the backend could not even create the process
                log.exception("container %s failed to start", ins.container)
                rec.init_failure = P.failure(None, f"container failed to start: {exc}", "")
                self._on_container_exit(ins.container, ExitInfo(None, None))
                return
            if rec.state == "stopping":
                # Stopped (app stopped, scaled down) while the backend was still creating the process,
                # when there was nothing to signal yet: cancel it now (it is not ready: nothing owed).
                await self.backend.kill(ins.container)

        self.spawn(start())

    def _on_container_output(self, cid: str, fd: int, line: bytes) -> None:
        rec = self.containers.get(cid)
        if rec is None:
            return
        self.logs.record_log(rec, "stderr" if fd == 2 else "stdout", line.decode("utf-8", "replace"))

    def _on_container_exit(self, cid: str, info: ExitInfo) -> None:
        """The container's process exited. What it sent just before (outputs, released inputs) may
        still be unread on its connection, so the exit counts once that connection is drained too."""
        rec = self.containers.get(cid)
        if rec is None:
            return
        if rec.proto is not None and rec.exit_info is None:
            rec.exit_info = info
            asyncio.get_running_loop().call_later(CONNECTION_DRAIN_SECONDS, self._container_gone, cid, info)
            return
        self._container_gone(cid, info)

    def container_closed(self, cid: str) -> None:
        rec = self.containers.get(cid)
        if rec is None:
            return
        rec.proto = None
        if rec.exit_info is not None:
            self._container_gone(cid, rec.exit_info)

    def _container_gone(self, cid: str, info: ExitInfo) -> None:
        rec = self.containers.pop(cid, None)
        if rec is None:
            return
        if self.web is not None and cid in self.web.tunnels:
            self.spawn(self.web.close_tunnels(cid))
        if rec.proto is not None:  # a connection left behind (its machine was lost, not its process): closed,
            rec.proto.close()  # so a process that outlived its node's loss stops too
        if rec.web_prefix is not None:
            for index in range(len(rec.fn.defn.web or ())):
                with contextlib.suppress(OSError):
                    os.unlink(f"{rec.web_prefix}-{index}")
        was_stopping = rec.state == "stopping"
        # Died unasked, without reporting a failure: a crash (the scheduler reruns what it held).
        crashed = rec.init_failure is None and not was_stopping and not rec.killed_because
        self.supervisor.died_starting(rec, info)
        if rec.init_failure is not None and not crashed:
            reason = "container failed during start-up"
        elif self.closing:
            reason = f"the control plane was stopped while '{rec.fn.tag}' was running this input"
        elif was_stopping:
            reason = f"container {cid} of '{rec.fn.tag}' was stopped while running this input"
        else:
            reason = f"container {cid} of '{rec.fn.tag}' {info.describe()} while running this input"
            if info.hint():
                reason += f". {info.hint()}"
        log.info("container %s exited (%s)", cid, info.describe())
        self.supervisor.exited(rec, info)
        stopping = self.stopping_apps.get(rec.fn.app_id)
        if stopping is not None:
            stopping.discard(cid)
            if not stopping:
                self.app_stopped(rec.fn.app_id)
        instructions = self.executor.container_exited(
            cid, reason, init_failed=rec.init_failure is not None and not crashed, crashed=crashed
        )
        for ins in instructions:
            if isinstance(ins, FailInputs) and rec.init_failure is not None:
                self.calls.fail_inputs(ins, rec.init_failure)
            elif isinstance(ins, RestartBackoff):
                self.supervisor.start_failed(ins, rec)
            else:
                self.executor.execute([ins])

    def container_hello(self, proto: FramedProtocol, hello: P.Hello) -> dict[str, Any] | None:
        """A container's runtime says hello: its definition, or None if its credentials are wrong."""
        rec = self.containers.get(hello.cid or "")
        if rec is None or not secrets.compare_digest(rec.token, hello.token or ""):
            return None
        if rec.proto is not None:  # its runtime is connected: a second "runtime" is user code posing as one
            return None
        rec.proto = proto
        self.executor.container_connected(rec.container_id)
        return rec.fn.definition

    def container_credentials_ok(self, cid: str, token: str) -> bool:
        rec = self.containers.get(cid)
        return rec is not None and secrets.compare_digest(rec.token, token)

    def container_message(self, cid: str, msg: P.FromContainer) -> None:
        """A message of a container's runtime, decoded as its type (`P.decode_from_container`)."""
        now = time.monotonic()
        rec = self.containers.get(cid)
        if rec is None:
            return
        rec.last_heard = now  # any message is a sign of life (see `liveness`)
        if isinstance(msg, P.ContainerOutputs):
            if msg.items:
                self._container_outputs(rec, msg.items, now)
            if msg.chunks:
                self._chunk_outputs(rec, msg.chunks, now)
        elif isinstance(msg, P.ContainerGen):
            if not self.executor.holds(cid, msg.input):
                log.warning("container %s sent generator items for input %s, which it does not hold", cid, msg.input)
                return
            inp = self.inputs.get(msg.input)
            if inp is not None and inp.call.subscriber is not None:
                inp.call.subscriber.proto.send(P.GenItems(call=inp.call.call_id, items=msg.items))
        elif isinstance(msg, P.Ready):
            rec.ready_at = time.time()
            if rec.state != "stopping":
                rec.state = "ready"
            rec.timeline = msg.timeline
            rec.exit_hooks = msg.exit_hooks
            rec.timeline["ready"] = rec.ready_at - rec.started_at
            log.info("container %s ready in %.1f ms %s", cid, 1000 * (rec.ready_at - rec.started_at), rec.timeline)
            self.observer.container_ready(rec.fn.function_id, rec.fn.app_id, rec.fn.tag, cid,
                                          rec.ready_at - rec.started_at)
            rec.fn.start_failure_key = None  # a later start-up failure is news again
            self.executor.container_ready(cid, now)
        elif isinstance(msg, P.InitFailure):
            rec.init_failure = msg.failure
        elif isinstance(msg, P.ContainerRelease):
            self.executor.release(cid, msg.ids, now, leaving=msg.leaving)
        elif isinstance(msg, P.Ping):  # the container checks that the control plane still answers
            if rec.proto is not None:
                rec.proto.send(_PONG)

    def _container_outputs(self, rec: ContainerRecord, items: list[P.OutputRow], now: float) -> None:
        done: list[int] = []
        seconds = 0.0
        cpu: float | None = 0.0
        deliver = []
        holds = self.executor.holds
        cid = rec.container_id
        for item in items:
            iid, status, data, secs = item.iid, item.status, item.data, item.seconds
            if not holds(cid, iid):
                continue  # it timed out here (the control plane answered for it) or went back to the queue
            done.append(iid)
            seconds += secs
            cpu = cpu + item.cpu if cpu is not None and item.cpu is not None else None
            inp = self.inputs.get(iid)
            if inp is None:
                continue
            inp.seconds = secs
            rec.last_call_id = inp.call.call_id  # its last lines may still be on their way (another pipe)
            if status in (P.FAILURE, P.TIMEOUT) and self.calls.retry_later(inp):
                continue
            deliver.append((inp, status, data))
        if done:
            self.calls.observed(rec.fn, seconds, len(done))
        instructions = self.executor.inputs_done(cid, done, seconds, now, cpu_seconds=cpu)
        if deliver:
            self.calls.deliver(deliver)
        self.executor.execute(instructions)

    def _chunk_outputs(self, rec: ContainerRecord, rows: list[P.ChunkOutputRow], now: float) -> None:
        """Outputs of inputs of chunks (see `calls.CallService.chunk_outputs`): a chunk is done for the
        scheduler once none of its inputs is left; until then each report restarts its clock."""
        cid = rec.container_id
        holds = self.executor.holds
        for row in rows:
            iid = row.iid
            if not holds(cid, iid):
                continue  # it timed out here or went back to the queue (its outputs are stale)
            inp = self.inputs.get(iid)
            if inp is None or type(inp.args) is not list:
                continue
            rec.last_call_id = inp.call.call_id
            rec.chunk_inputs += len(row.keys)
            if self.calls.chunk_outputs(inp, row):
                rec.chunk_inputs -= 1  # (the scheduler counts the chunk as one served)
                # Its CPU share (cpu-bound or not) as its last report saw it.
                cpu = None if row.cpu is None or row.seconds <= 0 else inp.seconds * row.cpu / row.seconds
                self.executor.execute(self.executor.inputs_done(cid, [iid], inp.seconds, now, cpu_seconds=cpu))
            else:
                self.executor.restart_clock(cid, iid, now)

    def container_exec_info(self, cid: str) -> dict[str, Any]:
        rec = self.containers.get(cid)
        if rec is None:
            raise LookupError(f"No running container {cid}")
        return {"pid": rec.pid, "state": rec.state, "env": rec.env}

    async def tunnel_op(self, peer: Peer, msg: P.Tunnel) -> Any:
        """`modal.forward` in a container: a gateway port relaying to that container's own relay socket."""
        rec = self.containers.get(peer.container_id or "")
        if rec is None:
            from ..exception import InvalidError

            raise InvalidError("Forwarding ports only works inside a Modal container")
        if self.web is None:
            raise LookupError("web endpoints are not available on this control plane")
        return await self.web.tunnel(rec.container_id, rec.web_prefix, msg)

    # --- introspection -----------------------------------------------------------------------------
    def container_list(self) -> list[dict[str, Any]]:
        now = time.time()
        out = []
        for cid, rec in self.containers.items():
            c = self.executor.container(cid)
            pool = self.executor.pool(rec.fn.function_id)
            out.append(
                {
                    "container_id": cid,
                    "app_id": rec.fn.app_id,
                    "app_name": (self.apps.get(rec.fn.app_id) or {}).get("name"),
                    "function": rec.fn.tag,
                    "start_failures": pool.start_failures if pool is not None else 0,
                    "state": rec.state,
                    "pid": rec.pid,
                    "node": self.backend.where(cid) or "local",
                    "uptime": now - rec.started_at,
                    "inputs_served": c.served + rec.chunk_inputs if c else 0,
                    "running": len(c.assigned) if c else 0,
                    "timeline": rec.timeline,
                    "gpus": self._gpu_rows(rec.gpus),
                }
            )
        for pool in self.executor.pools():  # containers the plan wants that wait for a GPU
            fn = self.functions.get(pool.id)
            if fn is None:
                continue
            for _ in range(pool.waiting_for_gpu):
                out.append({"container_id": "-", "app_id": fn.app_id,
                            "app_name": (self.apps.get(fn.app_id) or {}).get("name"), "function": fn.tag,
                            "start_failures": 0, "state": "waiting for a GPU", "pid": None, "uptime": 0.0,
                            "inputs_served": 0, "running": 0, "timeline": {}, "gpus": []})
        return out + self.sandboxes.container_list()

    def _gpu_rows(self, uuids: tuple[str, ...]) -> list[dict[str, Any]]:
        """The GPUs a container holds: index, UUID, model, and memory/utilisation where NVML tells."""
        from .gpus import usage

        by_uuid = {d.uuid: d for d in self.gpus}
        use = usage(list(uuids))
        return [{"index": by_uuid[u].index, "uuid": u, "model": by_uuid[u].model or by_uuid[u].name,
                 **use.get(u, {})} for u in uuids if u in by_uuid]
