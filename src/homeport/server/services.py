"""The control plane's services: they execute the scheduler's instructions and move data.

I/O lives here (connections, the backend, SQLite); decisions live in `core.scheduler`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from .. import _protocol as P
from .._backoff import retry_delay
from .._names import object_name_problem
from .._wire import FramedProtocol
from ..backends import Backend, ExitInfo
from ..exception import InvalidError, UnimplementedError
from .core.gpus import parse_request as parse_gpu_request
from .core.scheduler import (
    Assign,
    Capacity,
    FailInputs,
    InputsTimedOut,
    Instruction,
    PoolConfig,
    RequeueInputs,
    RestartBackoff,
    Scheduler,
    StartContainer,
    StartupTimedOut,
    StopContainer,
)
from .dashboard import Dashboard
from .dashboard.views import gauges
from .images import ImageBuilder
from .launch import Launcher
from .logs import FLUSH_SECONDS as FLUSH_LOGS_SECONDS
from .observe import Observer
from .records import ERROR, STOP_GRACE_SECONDS, CallRecord, ContainerRecord, FunctionRecord, InputRecord, Peer
from .schedules import ScheduleRunner
from .secrets import SecretStore
from .state import State
from .supervision import Supervisor
from .volumes import VolumeStore
from .web import WebEndpoints

log = logging.getLogger("homeport.server")

# Start-up failures in a row after which `app list` / `container list` call a pool crash-looping.
CRASH_LOOP_FAILURES = 2
# After a container process exits, how long to wait for its connection to deliver what it sent last.
CONNECTION_DRAIN_SECONDS = 2.0


def machine_capacity() -> Capacity:
    """The cores and memory containers may request in all (HOMEPORT_CPU / HOMEPORT_MEMORY_MIB override)."""
    import psutil

    cpu = float(os.environ.get("HOMEPORT_CPU") or psutil.cpu_count() or 1)
    mem = int(os.environ.get("HOMEPORT_MEMORY_MIB") or psutil.virtual_memory().total // (1 << 20))
    return Capacity(cpu=cpu, memory_mib=mem)


def _canonical(value: Any) -> Any:
    """Dicts as key-sorted pairs, recursively: one encoding per value, whatever the insertion order."""
    if isinstance(value, dict):
        return [[k, _canonical(v)] for k, v in sorted(value.items())]
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def _web_socket_dir(state_dir: str) -> str:
    """Where containers put their web endpoints' Unix sockets: the state directory when its paths are
    short enough for a socket address (about 100 bytes), else a private directory under /tmp."""
    path = os.path.join(state_dir, "web")
    if len(path) + len("/ta-0000aaaaaaaa/w-00") > 100:
        import tempfile

        return tempfile.mkdtemp(prefix="hp-web-")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


_WEB_CALL = ("A webhook function cannot be invoked for remote execution: '{tag}' is served over HTTP only "
             "(its endpoint's authentication, if any, applies). Call it at its web URL.")


def _web_inputs(fn: FunctionRecord, inputs: list) -> list:
    """The inputs that name a web endpoint of the function: those are reached over HTTP only, through
    the gateway (where `requires_proxy_auth` is checked), never as calls."""
    web = fn.definition.get("web")
    if not web:
        return []
    names = {e.get("name") for e in web}
    return [i for i in inputs if i[2] in names]


def _check_name(name: Any, object_type: str) -> None:
    """Modal's name rule, on the server, for every named object (a name is a key, never a path)."""
    why = object_name_problem(name, object_type)
    if why is not None:
        raise InvalidError(why)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:22]}"


def pool_config(cfg: dict[str, Any], definition: dict[str, Any]) -> PoolConfig:
    """A pool's scaling settings from a function's config, and its deadlines from its definition."""
    batch = definition.get("batch")
    # A batch starts once it is full or `wait_ms` passed, and may also wait for the batch before it
    # (up to `timeout`): the control plane cannot see which inputs a batched container has started.
    batch_wait = batch["wait_ms"] / 1000 + (definition.get("timeout") or 0) if batch else 0.0
    return PoolConfig(
        min_containers=cfg.get("min_containers", 0),
        max_containers=cfg.get("max_containers"),
        buffer_containers=cfg.get("buffer_containers", 0),
        scaledown_window=cfg.get("scaledown_window", 60),
        max_inputs=cfg.get("max_inputs", 1),
        target_inputs=cfg.get("target_inputs"),
        # A web request's time is bounded by the gateway (504), which cannot hand it to another container.
        timeout=None if definition.get("web") else definition.get("timeout"),
        startup_timeout=definition.get("startup_timeout") or definition.get("timeout"),
        batch_wait=batch_wait,
        unbound=bool(cfg.get("unbound")),
        prefetch=not definition.get("web"),
        gpu=parse_gpu_request(cfg.get("gpu")),
        **{k: cfg[k] for k in ("cpu", "memory_mib") if cfg.get(k) is not None},
    )


class ControlPlane:
    def __init__(self, state: State, backend: Backend, token: str, address: str, scratch: str,
                 images: ImageBuilder | None = None, gpus: tuple | None = None) -> None:
        self.state = state
        self.images = images or ImageBuilder(os.path.join(os.path.dirname(scratch), "images"))
        self.backend = backend
        self.token = token
        self.address = address
        self.scratch = scratch
        self.volumes_unshared: str | None = None  # why volumes cannot be used (see volume_root)
        self._cid_counter = itertools.count(1)
        from . import gpus as _gpus

        # The machine's GPUs (NVML; `gpus` is a test's fake inventory): an empty one is no error.
        self.gpus = _gpus.discover() if gpus is None else tuple(gpus)
        self.scheduler = Scheduler(self._new_container_id, machine_capacity(), gpus=self.gpus)
        self.apps: dict[str, dict[str, Any]] = {}
        self.functions: dict[str, FunctionRecord] = {}
        self.calls: dict[str, CallRecord] = {}
        self.inputs: dict[int, InputRecord] = {}
        self.containers: dict[str, ContainerRecord] = {}
        self.log_subscribers: dict[str, set[Peer]] = {}
        # Stopped apps whose containers are still running their exit hooks: app id -> container ids.
        # Their logs keep flowing to the client until the last one exits.
        self.stopping_apps: dict[str, set[str]] = {}
        self.schedules = ScheduleRunner(state, self.run_scheduled)
        self.secrets: SecretStore | None = None  # set by the server's main once the key is loaded
        self.volumes: VolumeStore | None = None
        self.dictqueue: Any = None  # DictQueueStore, set by the server's main
        self.web: WebEndpoints | None = None  # web endpoints and the HTTP gateway (set by the server's main)
        self.dashboard: Dashboard | None = None  # the dashboard and /metrics (set by the server's main)
        self.web_dir = _web_socket_dir(os.path.dirname(scratch))
        self.launcher = Launcher(self.images, backend, address, self.web_dir, self.spawn)
        self.launcher.gpus = self.gpus
        self._app_stop_waiters: dict[str, list[asyncio.Future]] = {}
        self._input_ids = itertools.count(1)
        self._calls_flush_due = False  # `state.flush_calls` is scheduled for this event-loop turn
        # Container id -> inputs assigned in this event-loop turn to a container that was busy, sent as
        # one INPUTS message at its end (`_send_assigned`): many callers' calls travel in one frame.
        self._assigned_out: dict[str, list] = {}
        self._tasks: set[asyncio.Task] = set()
        self._wake = asyncio.Event()
        self.shutdown_requested = asyncio.Event()
        self.serving = asyncio.Event()  # set once containers can connect to the control plane's socket
        self.started_at = time.time()
        self.supervisor = Supervisor(self)
        self.observer = Observer(state.db, gauges=lambda: gauges(self))
        from .sandboxes import Sandboxes

        self.sandboxes = Sandboxes(self)
        from .logs import LogStore

        self.logs = LogStore(os.path.join(os.path.dirname(scratch), "logs.db"))  # what `app logs` reads
        self._logs_flush: asyncio.TimerHandle | None = None

    def _new_container_id(self) -> str:
        return f"ta-{next(self._cid_counter):04d}{secrets.token_hex(4)}"

    # --- background work, owned and cancelled by `close` -------------------------------------------
    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def run_ticker(self) -> None:
        from .liveness import watch_containers

        self.spawn(watch_containers(self))  # containers that stop answering are reported
        while True:
            deadline = self.scheduler.next_deadline()
            delay = 1.0 if deadline is None else min(1.0, max(0.05, deadline - time.monotonic()))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except asyncio.TimeoutError:
                pass
            try:
                self.execute(self.scheduler.tick(time.monotonic()))
            except Exception:  # one bad instruction must not stop every pool's scaling and deadlines
                log.exception("executing the scheduler's tick failed")

    async def close(self) -> None:
        self.closing = True  # what its containers were running fails with why: the control plane stopped
        self.schedules.close()
        for app_id in list(self.apps):
            # Deployed apps stay deployed: the next control plane restores them.
            self.stop_app(app_id, "control plane shutting down", keep_deployed=True)
        if self.web is not None:
            await self.web.close()
        await self.backend.close(STOP_GRACE_SECONDS)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.logs.close()

    # --- executing decisions -----------------------------------------------------------------------
    def execute(self, instructions: list[Instruction]) -> None:
        for ins in instructions:
            if isinstance(ins, Assign):
                rec = self.containers.get(ins.container)
                items = []
                web = self.web
                for iid in ins.inputs:
                    inp = self.inputs.get(iid)
                    if inp is None:
                        if web is not None:
                            web.assigned(ins.container, iid)  # a web request: the gateway forwards it
                        continue
                    items.append([iid, inp.args, inp.method, inp.call.call_id])
                if items and rec is not None and rec.proto is not None:
                    held = self._assigned_out.get(ins.container)
                    if held is not None:
                        held.extend(items)
                        continue
                    c = self.scheduler.containers.get(ins.container)
                    if c is None or len(c.assigned) <= len(ins.inputs):
                        # It held nothing else (a warm call): no reason to wait for the turn's end.
                        rec.proto.send({"t": P.INPUTS, "items": items})
                        continue
                    try:
                        loop = asyncio.get_running_loop()
                    except RuntimeError:  # not on the event loop: nothing to gather with
                        rec.proto.send({"t": P.INPUTS, "items": items})
                        continue
                    if not self._assigned_out:
                        loop.call_soon(self._send_assigned)
                    self._assigned_out[ins.container] = items
            elif isinstance(ins, StartContainer):
                self._start_container(ins)
            elif isinstance(ins, StopContainer):
                rec = self.containers.get(ins.container)
                log.info("%s container %s: %s", "stopping" if rec is None or rec.ready_at is not None
                         else "cancelling (not ready)", ins.container, ins.reason)
                if rec is not None:
                    rec.state = "stopping"
                    if rec.stop_requested_at is None:
                        rec.stop_requested_at = time.monotonic()
                if rec is not None and rec.ready_at is None:
                    # Not ready: no enter hook has finished, so no exit hook is owed: cancel it at once
                    # (a scale-out container a short map no longer needs), rather than wait out the grace.
                    self.spawn(self.backend.kill(ins.container))
                else:
                    self.spawn(self.backend.stop(ins.container, STOP_GRACE_SECONDS))
            elif isinstance(ins, FailInputs):
                self._fail_inputs(ins)
            elif isinstance(ins, RequeueInputs):
                pass  # the scheduler already put them back in the queue
            elif isinstance(ins, InputsTimedOut):
                self.supervisor.inputs_timed_out(ins)
            elif isinstance(ins, StartupTimedOut):
                self.supervisor.startup_timed_out(ins)
            elif isinstance(ins, RestartBackoff):
                self.supervisor.start_failed(ins, self.containers.get(ins.container))

    async def build_images(self, requests: list[dict[str, Any]], on_log: Callable[[str, str, int], None]) -> list[str]:
        """Build (or find cached) each requested image (see `Launcher.build_images`, which plans them
        all before building any); the named secrets of build steps are resolved first, so a missing
        one fails before any build too."""
        for request in requests:
            for step in request["steps"]:
                if step.get("secret_refs"):
                    named = self._function_env({"secret_refs": step["secret_refs"]})
                    step["_secret_env"] = {**named, **(step.get("_secret_env") or {})}
        return await self.launcher.build_images(requests, on_log)

    def _start_container(self, ins: StartContainer) -> None:
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

    def _fail_inputs(self, ins: FailInputs, init_failure: dict[str, Any] | None = None) -> None:
        by_call: dict[str, list] = {}
        for iid in ins.inputs:
            inp = self.inputs.get(iid)
            if inp is None:
                if self.web is not None:
                    self.web.failed(iid, ins.reason, init_failure.get("repr") if init_failure is not None else None)
                continue
            status, data = ERROR, {"code": "execution", "msg": ins.reason}
            if init_failure is not None:
                status, data = P.INIT_FAILURE_STATUS, init_failure
            # Lost inputs (their containers crashed) were already re-run up to the scheduler's crash limit,
            # which does not use up `retries=` (see core.scheduler): they fail now.
            by_call.setdefault(inp.call.call_id, []).append((inp, status, data))
        for items in by_call.values():
            self.deliver(items)

    # --- containers --------------------------------------------------------------------------------
    def _on_container_output(self, cid: str, fd: int, line: bytes) -> None:
        rec = self.containers.get(cid)
        if rec is None:
            return
        self.record_log(rec, "stderr" if fd == 2 else "stdout", line.decode("utf-8", "replace"))

    def record_log(self, rec: ContainerRecord, stream: str, data: str) -> None:
        """A line of a container's (`stream`: stdout, stderr, or system: the platform's about it): kept in
        the log store, and sent to the app's live log readers."""
        running = self.scheduler.containers.get(rec.container_id)
        call_id = None
        if running is not None and len(running.running) == 1:
            inp = self.inputs.get(next(iter(running.running)))
            call_id = inp.call.call_id if inp is not None else None
        elif running is None or not running.running:
            call_id = rec.last_call_id
        self.logs.add(rec.fn.app_id, stream, data, function_id=rec.fn.function_id, function=rec.fn.tag,
                      container_id=rec.container_id, call_id=call_id)
        self.observer.log_line(rec.fn.app_id, rec.fn.tag, rec.container_id, stream, data, call_id)
        if self._logs_flush is None:
            self._logs_flush = asyncio.get_running_loop().call_later(FLUSH_LOGS_SECONDS, self._flush_logs)
        subs = self.log_subscribers.get(rec.fn.app_id)
        if subs:
            msg = {"t": P.LOG, "app": rec.fn.app_id, "fn": rec.fn.tag, "cid": rec.container_id,
                   "fd": 1 if stream == "stdout" else 2, "data": data}
            for peer in subs:
                peer.proto.send(msg)

    def _flush_logs(self) -> None:
        self._logs_flush = None
        self.logs.flush()

    def query_logs(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Log entries (see `logs.LogQuery`), and whether the app (if one was named) still runs: a
        follower stops once it does not and nothing more is left to read."""
        from .logs import LogQuery

        try:
            q = LogQuery.from_message(msg)
        except (TypeError, ValueError) as exc:
            from ..exception import InvalidError

            raise InvalidError(str(exc)) from None
        running = None
        if q.app_id is not None:
            running = q.app_id in self.apps or q.app_id in self.stopping_apps
        elif q.container_id is not None:
            running = q.container_id in self.containers
        return {"entries": self.logs.query(q), "running": running}

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
            for index in range(len(rec.fn.definition.get("web") or ())):
                with contextlib.suppress(OSError):
                    os.unlink(f"{rec.web_prefix}-{index}")
        was_stopping = rec.state == "stopping"
        # Died unasked, without reporting a failure: a crash (the scheduler reruns what it held).
        crashed = rec.init_failure is None and not was_stopping and not rec.killed_because
        self.supervisor.died_starting(rec, info)
        if rec.init_failure is not None and not crashed:
            reason = "container failed during start-up"
        elif getattr(self, "closing", False):
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
                self._app_stopped(rec.fn.app_id)
        instructions = self.scheduler.container_exited(
            cid, time.monotonic(), reason, init_failed=rec.init_failure is not None and not crashed, crashed=crashed
        )
        for ins in instructions:
            if isinstance(ins, FailInputs) and rec.init_failure is not None:
                self._fail_inputs(ins, rec.init_failure)
            elif isinstance(ins, RestartBackoff):
                self.supervisor.start_failed(ins, rec)
            else:
                self.execute([ins])

    def container_hello(self, proto: FramedProtocol, msg: dict[str, Any]) -> dict[str, Any] | None:
        rec = self.containers.get(msg.get("cid", ""))
        if rec is None or not secrets.compare_digest(rec.token, msg.get("token", "")):
            return None
        if rec.proto is not None:  # its runtime is connected: a second "runtime" is user code posing as one
            return None
        rec.proto = proto
        self.scheduler.container_connected(rec.container_id, time.monotonic())
        return rec.fn.definition

    def container_credentials_ok(self, cid: str, token: str) -> bool:
        rec = self.containers.get(cid)
        return rec is not None and secrets.compare_digest(rec.token, token)

    def container_message(self, cid: str, msg: dict[str, Any]) -> None:
        t = msg["t"]
        now = time.monotonic()
        rec = self.containers.get(cid)
        if rec is None:
            return
        rec.last_heard = now  # any message is a sign of life (see `liveness`)
        if t == P.CONTAINER_OUTPUTS:
            self._container_outputs(rec, msg["items"], now)
        elif t == P.CONTAINER_GEN:
            if not self.scheduler.holds(cid, msg["input"]):
                log.warning("container %s sent generator items for input %s, which it does not hold", cid, msg["input"])
                return
            inp = self.inputs.get(msg["input"])
            if inp is not None and inp.call.subscriber is not None:
                inp.call.subscriber.proto.send({"t": P.GEN_ITEMS, "call": inp.call.call_id, "items": msg["items"]})
        elif t == P.READY:
            rec.ready_at = time.time()
            if rec.state != "stopping":
                rec.state = "ready"
            rec.timeline = msg.get("timeline", {})
            rec.exit_hooks = bool(msg.get("exit_hooks"))
            rec.timeline["ready"] = rec.ready_at - rec.started_at
            log.info("container %s ready in %.1f ms %s", cid, 1000 * (rec.ready_at - rec.started_at), rec.timeline)
            self.observer.container_ready(rec.fn.function_id, rec.fn.app_id, rec.fn.tag, cid,
                                          rec.ready_at - rec.started_at)
            rec.fn.start_failure_key = None  # a later start-up failure is news again
            self.execute(self.scheduler.container_ready(cid, now))
        elif t == P.INIT_FAILURE:
            rec.init_failure = msg["failure"]
        elif t == P.CONTAINER_RELEASE:
            self.execute(self.scheduler.release(cid, msg["ids"], now, leaving=msg.get("leaving", False)))
        elif t == P.PING:  # the container checks that the control plane still answers
            if rec.proto is not None:
                rec.proto.send({"t": P.PONG})

    def _container_outputs(self, rec: ContainerRecord, items: list, now: float) -> None:
        done: list[int] = []
        seconds = 0.0
        cpu: float | None = 0.0
        deliver = []
        holds = self.scheduler.holds
        cid = rec.container_id
        for item in items:
            iid, status, data, secs = item[:4]
            if not holds(cid, iid):
                continue  # it timed out here (the control plane answered for it) or went back to the queue
            done.append(iid)
            seconds += secs
            cpu = cpu + item[4] if cpu is not None and len(item) > 4 and item[4] is not None else None
            inp = self.inputs.get(iid)
            if inp is None:
                continue
            inp.seconds = secs
            rec.last_call_id = inp.call.call_id  # its last lines may still be on their way (another pipe)
            if status in (P.FAILURE, P.TIMEOUT) and self.retry_later(inp):
                continue
            deliver.append((inp, status, data))
        instructions = self.scheduler.inputs_done(cid, done, seconds, now, cpu_seconds=cpu)
        if deliver:
            self.deliver(deliver)
        self.execute(instructions)

    def _send_assigned(self) -> None:
        """Send each container the inputs assigned to it since the last call, in one message."""
        out, self._assigned_out = self._assigned_out, {}
        for cid, items in out.items():
            rec = self.containers.get(cid)
            if rec is not None and rec.proto is not None:
                rec.proto.send({"t": P.INPUTS, "items": items})

    def _flush_calls_soon(self) -> None:
        if not self._calls_flush_due:
            self._calls_flush_due = True
            asyncio.get_running_loop().call_soon(self._flush_calls)

    def _flush_calls(self) -> None:
        self._calls_flush_due = False
        self.state.flush_calls()

    # --- retries -----------------------------------------------------------------------------------
    def retry_later(self, inp: InputRecord) -> bool:
        policy = inp.call.fn.retries
        if not policy or inp.call.kind == P.KIND_GENERATOR or inp.attempt >= policy["max_retries"]:
            return False
        if inp.call.call_id not in self.calls:
            return False
        inp.attempt += 1
        delay = retry_delay(policy, inp.attempt)
        log.info("retrying input %s of %s (attempt %d) in %.2fs", inp.input_id, inp.call.fn.tag, inp.attempt, delay)

        def requeue() -> None:
            if inp.input_id in self.inputs and inp.call.fn.function_id in self.scheduler.pools:
                self.execute(self.scheduler.submit(inp.call.fn.function_id, [inp.input_id], time.monotonic()))

        asyncio.get_running_loop().call_later(delay, requeue)
        return True

    # --- outputs -----------------------------------------------------------------------------------
    def deliver(self, items: list[tuple[InputRecord, int, Any]]) -> None:
        by_call: dict[str, list] = {}
        finished = self.observer.input_finished
        for inp, status, data in items:
            self.inputs.pop(inp.input_id, None)
            call = inp.call
            fn = call.fn
            finished(fn.function_id, fn.app_id, fn.tag, call.call_id, call.kind, inp.idx, status, inp.seconds,
                     inp.attempt, data)
            call.outstanding -= 1
            by_call.setdefault(call.call_id, []).append([inp.idx, status, data])
            if call.kind == P.KIND_SPAWN:
                call.result = (status, data)
                if call.durable:
                    self.state.finish_call(call.call_id, status, data)
                else:
                    self.state.finish_call_later(call.call_id, status, data)
                    self._flush_calls_soon()
                for w in call.waiters:
                    if not w.done():
                        w.set_result(None)
        for call_id, outs in by_call.items():
            call = self.calls.get(call_id)
            if call is None:
                continue
            if call.subscriber is not None:
                call.subscriber.proto.send({"t": P.OUTPUTS, "call": call_id, "items": outs})
            if call.outstanding <= 0 and call.inputs_closed and call.kind != P.KIND_SPAWN:
                del self.calls[call_id]
                self.observer.call_closed(call_id)

    # --- apps --------------------------------------------------------------------------------------
    def create_app(self, peer: Peer, msg: dict[str, Any]) -> str:
        app_id = new_id("ap")
        mode = "detached" if msg.get("detach") else "ephemeral"
        self.apps[app_id] = {"app_id": app_id, "name": msg.get("name"), "state": mode, "functions": []}
        self.state.create_app(app_id, msg.get("name"), msg.get("description"), mode)
        if mode == "ephemeral":
            peer.apps.add(app_id)
        self.log_subscribers.setdefault(app_id, set()).add(peer)
        return app_id

    async def publish_app(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Start an ephemeral app's functions: their ids by tag, and the URLs of its web endpoints."""
        app_id = msg["app_id"]
        if app_id not in self.apps:
            raise LookupError(f"app {app_id} is not running")
        self._plan_web(self.apps[app_id], msg["functions"])
        ids = self._add_functions(app_id, msg["functions"], anchor=time.time())
        return {"ids": ids, "web_urls": await self._publish_web(app_id, ids)}

    def _plan_web(self, app: dict[str, Any], functions: list[dict[str, Any]]) -> None:
        """Refuse, before anything starts, web endpoints whose URL labels clash."""
        if self.web is not None:
            self.web.plan(app, [(f["tag"], f["definition"]) for f in functions])

    async def _publish_web(self, app_id: str, ids: dict[str, str]) -> dict[str, str]:
        app = self.apps.get(app_id)
        records = [self.functions[fid] for fid in ids.values() if fid in self.functions]
        if self.web is None or app is None or not any(r.definition.get("web") for r in records):
            return {}
        return await self.web.publish(app, records)

    def _add_functions(self, app_id: str, functions: list[dict[str, Any]], anchor: float) -> dict[str, str]:
        """Start pools for an app's functions (the current version); schedules start with them."""
        app = self.apps[app_id]
        ids = {}
        now = time.monotonic()
        # Named secrets are resolved before anything starts: a missing one fails the whole app.
        self._check_placeable(functions)
        envs = [self._function_env(f["config"]) for f in functions]
        mounts = [self._function_mounts(f["config"]) for f in functions]
        for f, env, mnt in zip(functions, envs, mounts):
            fid = new_id("fu")
            cfg = f["config"]
            config = pool_config(cfg, f["definition"])
            if self.backend.places_gpus:  # Ray assigns GPUs with the node: this machine's are not reserved
                config = dataclasses.replace(config, gpu=())
            if app["state"] == "deployed":  # crash loops back off; the queue never fails for crashes
                config = replace(config, fail_on_crashes=False)
            definition = dict(f["definition"], app_id=app_id, function_id=fid, mounts=mnt,
                              cpu_limit=cfg.get("cpu_limit"), memory_limit_mib=cfg.get("memory_limit_mib"))
            rec = FunctionRecord(
                fid, app_id, f["tag"], definition, config, env, cfg.get("retries"),
                bool(definition.get("is_generator")),
            )
            self.functions[fid] = rec
            self.spawn(self.launcher.prepare_function_template(rec))
            app["functions"].append(fid)
            app.setdefault("by_tag", {})[f["tag"]] = fid
            app.setdefault("info", {})[f["tag"]] = f.get("info") or {}
            self.state.add_function(fid, app_id, f["tag"], {k: v for k, v in definition.items() if k != "serialized"})
            self.execute(self.scheduler.add_pool(fid, config, now))
            ids[f["tag"]] = fid
            if cfg.get("schedule"):
                self.schedules.start(app_id, f["tag"], cfg["schedule"], anchor, durable=app["state"] == "deployed")
        return ids

    def _check_placeable(self, functions: list[dict[str, Any]]) -> None:
        regional = [f["tag"] for f in functions if f["definition"].get("region")]
        if regional and not self.backend.places_by_region:
            raise UnimplementedError(
                f"`region=` of {', '.join(regional)}: this control plane runs containers on one machine "
                f"(the {self.backend.name} backend), which has no regions. Remove `region=`, or run the "
                "control plane on a Ray cluster (`homeport server start --backend ray`), whose nodes are "
                "labelled with their regions."
            )

    def _function_env(self, cfg: dict[str, Any]) -> dict[str, str]:
        """A function's environment: its named secrets (decrypted), then its local secrets and `env=`."""
        env: dict[str, str] = {}
        for ref in cfg.get("secret_refs") or ():
            if self.secrets is None:
                raise LookupError("named secrets are not available on this control plane")
            env.update(self.secrets.get(ref["name"], ref.get("required_keys") or ()))
        env.update(cfg.get("env") or {})
        return env

    def _function_mounts(self, cfg: dict[str, Any]) -> list[list[str]]:
        """[host directory, path in the container] for each volume a function mounts."""
        out = []
        for v in cfg.get("volumes") or ():
            if self.volumes is None:
                raise LookupError("volumes are not available on this control plane")
            if self.volumes_unshared:
                raise InvalidError(self.volumes_unshared)
            out.append([str(self.volumes.resolve(v["name"], bool(v.get("create_if_missing")))), v["path"]])
        return out

    def volume_op(self, peer: Peer, msg: dict[str, Any]) -> Any:
        vols = self.volumes
        op, name = msg["op"], msg.get("name")
        if op == "create":
            return vols.create(name, exist_ok=bool(msg.get("exist_ok")), ephemeral=bool(msg.get("ephemeral")))
        if op == "exists":
            return vols.exists(name)
        if op == "list":
            return vols.list()
        if op == "delete":
            return vols.delete(name)
        if op == "ls":
            return vols.listdir(name, msg.get("path") or "/", bool(msg.get("recursive")))
        if op == "read":
            return vols.read(name, msg["path"], int(msg.get("offset") or 0), msg.get("length"))
        if op == "put":
            return vols.put(name, [(p, d) for p, d in msg["files"]], bool(msg.get("force")))
        if op == "rm":
            return vols.remove(name, msg["path"], bool(msg.get("recursive")))
        if op == "cp":
            return vols.copy(name, msg["sources"], msg["dest"], bool(msg.get("recursive")))
        if op == "rename":
            return vols.rename(name, msg["new_name"])
        raise LookupError(f"unknown volume operation {op!r}")

    # --- deployed apps -----------------------------------------------------------------------------
    def deploy_app(self, peer: Peer | None, msg: dict[str, Any]) -> dict[str, Any]:
        """Register (or replace) a named app that outlives its client.

        A redeploy swaps the version atomically: lookups by name see only the new functions from the
        moment this returns, while the old version's pools finish the inputs they already have.
        """
        name = msg["name"]
        _check_name(name, "App")
        for f in msg["functions"]:
            self._function_env(f["config"])  # a missing secret fails the deploy before anything changes
            self._function_mounts(f["config"])
        app_id = self._deployed_by_name(name) or self.state.deployed_app_id(name)
        if app_id is None:
            app_id = new_id("ap")
            self.state.create_app(app_id, name, msg.get("description"), "deployed")
        else:
            self.state.set_app_state(app_id, "deployed")
        version, created = self.state.add_deployment(app_id, msg["functions"])
        if msg.get("meta"):
            self.state.set_deployment_meta(app_id, version, {k: str(v) for k, v in msg["meta"].items() if v})
        old = self.apps.get(app_id)
        if old is None:
            self.apps[app_id] = {"app_id": app_id, "name": name, "state": "deployed", "functions": []}
        else:
            self.schedules.stop_app(app_id)
            for fid in old.get("by_tag", {}).values():
                log.info("retiring %s (%s) of app %s: version %d replaces it", fid, self.functions[fid].tag, name, version)
                self.execute(self.scheduler.retire_pool(fid, time.monotonic()))
            old["by_tag"], old["info"] = {}, {}
        self.apps[app_id]["version"] = version
        if peer is not None:  # None: from the dashboard, which reads logs from the store
            self.log_subscribers.setdefault(app_id, set()).add(peer)
        ids = self._add_functions(app_id, msg["functions"], anchor=created)
        log.info("deployed app %s (%s) version %d", name, app_id, version)
        return {"app_id": app_id, "version": version, "ids": ids}

    async def deploy_app_web(self, peer: Peer | None, msg: dict[str, Any]) -> dict[str, Any]:
        name = msg["name"]
        self._plan_web({"app_id": self._deployed_by_name(name), "name": name, "state": "deployed"}, msg["functions"])
        reply = self.deploy_app(peer, msg)
        reply["web_urls"] = await self._publish_web(reply["app_id"], reply["ids"])
        return reply

    async def tunnel_op(self, peer: Peer, msg: dict[str, Any]) -> Any:
        """`modal.forward` in a container: a gateway port relaying to that container's own relay socket."""
        rec = self.containers.get(peer.container_id or "")
        if rec is None:
            from ..exception import InvalidError

            raise InvalidError("Forwarding ports only works inside a Modal container")
        if self.web is None:
            raise LookupError("web endpoints are not available on this control plane")
        return await self.web.tunnel(rec.container_id, rec.web_prefix, msg)

    async def restore_deployed(self) -> None:
        """On start-up: every app still deployed runs again, at its latest version."""
        for dep in self.state.live_deployments():
            app_id = dep["app_id"]
            self.apps[app_id] = {"app_id": app_id, "name": dep["name"], "state": "deployed", "functions": [],
                                 "version": dep["version"]}
            try:
                ids = self._add_functions(app_id, dep["functions"], anchor=dep["created_at"])
                await self._publish_web(app_id, ids)
                log.info("restored deployed app %s (%s) version %d", dep["name"], app_id, dep["version"])
            except Exception:
                log.exception("could not restore deployed app %s", dep["name"])
        self.restore_calls()

    def restore_calls(self) -> None:
        """On start-up, after `restore_deployed`: the durable calls a previous control plane accepted and
        did not finish run again (at least once: one that was running when it died runs twice), on the
        current version of their function; their results reach `FunctionCall.from_id(...).get()`."""
        for call in self.state.unfinished_calls():
            call_id = call["call_id"]
            try:
                fid = self._restored_fid(call["function_id"])
            except Exception as exc:  # e.g. a variant whose secret was deleted meanwhile
                log.warning("could not bind the function of call %s again: %s", call_id, exc)
                fid = None
            why = None
            if fid is None:
                why = (f"call {call_id} could not run again after the control plane restarted: its function's app "
                       "is no longer deployed")
            else:
                why = self.create_call(None, {"fid": fid, "call": call_id, "kind": P.KIND_SPAWN, "last": True,
                                              "inputs": call["inputs"]}, answer=False, restored=True)
            if why is not None:
                self.state.finish_call(call_id, ERROR, {"code": "execution", "msg": why})
            else:
                log.info("call %s accepted by a previous control plane runs again", call_id)

    def _restored_fid(self, old_fid: str) -> str | None:
        """The function a durable call of `old_fid` (a function id of a previous control plane) runs on now."""
        variant = self.state.variant(old_fid)
        if variant is not None:
            base_old, request = variant
            base = self._restored_fid(base_old)
            return None if base is None else self.bind_function({**request, "fid": base})
        tagged = self.state.function_tag(old_fid)
        if tagged is None:
            return None
        app = self.apps.get(tagged[0])
        if app is None or app.get("state") != "deployed":
            return None
        return app.get("by_tag", {}).get(tagged[1])

    def _deployed_by_name(self, name: str) -> str | None:
        for app in self.apps.values():
            if app["state"] == "deployed" and app["name"] == name:
                return app["app_id"]
        return None

    def lookup_function(self, msg: dict[str, Any]) -> dict[str, Any]:
        app_id = msg.get("app_id") if msg.get("app_id") in self.apps else self._deployed_by_name(msg["app"])
        if app_id is None:
            raise LookupError(
                f"App '{msg['app']}' is not deployed. Deploy it with `homeport deploy` (or `app.deploy()`) first."
            )
        app = self.apps[app_id]
        if msg.get("version") is not None and msg["version"] != app.get("version"):
            # Only the current version of a deployed app runs; an older one would need its own pools.
            from ..exception import UnimplementedError

            raise UnimplementedError(
                f"App '{msg['app']}' runs version v{app.get('version')}; serving an older version "
                f"(v{msg['version']}) is not built in Homeport yet."
            )
        fid = app["by_tag"].get(msg["name"])
        if fid is None:
            names = ", ".join(sorted(app["by_tag"])) or "none"
            raise LookupError(f"App '{msg['app']}' has no function or class '{msg['name']}' (it has: {names}).")
        fn = self.functions[fid]
        web = fn.definition.get("web") or ()
        keys = [fn.tag if e.get("name") is None else f"{fn.tag}.{e['name']}" for e in web]
        web_urls = {k: u for k in keys if self.web is not None and (u := self.web.url_of(app_id, k))}
        return {"fid": fid, "tag": fn.tag, "is_generator": fn.is_generator, "info": app["info"].get(fn.tag, {}),
                "web": fn.tag in keys, "web_url": web_urls.get(fn.tag), "web_urls": web_urls}

    def lookup_app(self, msg: dict[str, Any]) -> dict[str, Any]:
        app_id = self._deployed_by_name(msg["name"])
        if app_id is None:
            if not msg.get("create_if_missing"):
                raise LookupError(f"App '{msg['name']}' is not deployed.")
            _check_name(msg["name"], "App")
            app_id = new_id("ap")
            self.state.create_app(app_id, msg["name"], msg["name"], "deployed")
            self.state.add_deployment(app_id, [])
            self.apps[app_id] = {"app_id": app_id, "name": msg["name"], "state": "deployed", "functions": [],
                                 "version": 1, "by_tag": {}, "info": {}}
        return {"app_id": app_id, "name": msg["name"]}

    def list_apps(self) -> list[dict[str, Any]]:
        out = []
        for row in self.state.apps():
            live = self.apps.get(row["app_id"])
            state = live["state"] if live else row["state"]
            n_containers = sum(1 for c in self.containers.values() if c.fn.app_id == row["app_id"])
            out.append({**row, "state": state, "containers": n_containers,
                        "crash_looping": self._crash_looping(live),
                        "version": live.get("version") if live else None,
                        "functions": sorted(live.get("by_tag", {})) if live else []})
        return out

    def _crash_looping(self, app: dict[str, Any] | None) -> list[str]:
        """Functions of a running app whose containers keep failing during start-up."""
        if not app:
            return []
        tags = set()
        for fid in app["functions"]:
            pool = self.scheduler.pools.get(fid)
            if pool is not None and pool.start_failures >= CRASH_LOOP_FAILURES and fid in self.functions:
                tags.add(self.functions[fid].tag)
        return sorted(tags)

    def app_history(self, name: str) -> list[dict[str, Any]]:
        app_id = self._deployed_by_name(name) or self.state.deployed_app_id(name)
        if app_id is None:
            raise LookupError(f"No deployed app named '{name}'.")
        meta = self.state.deployment_meta(app_id)
        return [
            {"version": d["version"], "created_at": d["created_at"], "functions": [f["tag"] for f in d["functions"]],
             **meta.get(d["version"], {})}
            for d in self.state.deployments(app_id)
        ]

    def container_exec_info(self, cid: str) -> dict[str, Any]:
        rec = self.containers.get(cid)
        if rec is None:
            raise LookupError(f"No running container {cid}")
        return {"pid": rec.pid, "state": rec.state, "env": rec.env}

    async def rollback_app(self, peer: Peer | None, msg: dict[str, Any]) -> dict[str, Any]:
        """Deploy an earlier version's functions again, as a new version (`homeport app rollback`)."""
        from ..exception import InvalidError

        name = msg["name"]
        app_id = self._deployed_by_name(name) or self.state.deployed_app_id(name)
        if app_id is None:
            raise LookupError(f"No deployed app named '{name}'.")
        versions = self.state.deployments(app_id)
        target = msg.get("version")
        if target is None:
            if len(versions) < 2:
                raise InvalidError(f"App '{name}' has one version only: there is no earlier one to roll back to.")
            target = versions[-2]["version"]
        match = [d for d in versions if d["version"] == target]
        if not match:
            raise LookupError(f"App '{name}' has no version {target} (it has v1 to v{versions[-1]['version']}).")
        reply = await self.deploy_app_web(peer, {"name": name, "functions": match[0]["functions"]})
        reply["from_version"] = target
        return reply

    def subscribe_logs(self, peer: Peer, app_id: str) -> None:
        self.log_subscribers.setdefault(app_id, set()).add(peer)

    def run_scheduled(self, app_id: str, tag: str) -> None:
        """A schedule fired: one call of the function with no arguments, kept like a spawned call."""
        app = self.apps.get(app_id)
        fid = app and app.get("by_tag", {}).get(tag)
        if not fid:
            return
        import pickle

        call_id = new_id("fc")
        log.info("schedule fired: %s of app %s (%s)", tag, app.get("name") or app_id, call_id)
        self.create_call(None, {"fid": fid, "call": call_id, "kind": P.KIND_SPAWN, "last": True,
                                "inputs": [[0, pickle.dumps(((), {}), protocol=5), None]]}, scheduled=True)

    def bind_function(self, msg: dict[str, Any]) -> str:
        """A variant of a function: a class with parameter values, or `with_options` overrides."""
        base = self.functions.get(self._current(msg["fid"]))
        if base is None:
            raise LookupError(f"function {msg['fid']} is not running (its app was stopped)")
        # The same values give the same variant however the client ordered them.
        key = P.encode(_canonical({"p": msg.get("params") or {}, "c": msg.get("config") or {},
                                   "d": msg.get("definition") or {}}))
        variants = self.apps[base.app_id].setdefault("variants", {})
        fid = variants.get((base.function_id, key))
        if fid is not None and fid in self.functions:
            return fid
        cfg = dict(msg.get("config") or {})
        env = {**base.env, **self._function_env({"secret_refs": cfg.pop("secret_refs", None),
                                                 "env": cfg.pop("env", {})})}
        limits = {k: cfg.pop(k) for k in ("cpu_limit", "memory_limit_mib") if k in cfg}
        if "volumes" in cfg:
            limits["mounts"] = self._function_mounts({"volumes": cfg.pop("volumes")})
        retries = cfg.pop("retries", base.retries) if "retries" in cfg else base.retries
        if "gpu" in cfg:  # `with_options(gpu=...)`
            cfg["gpu"] = parse_gpu_request(cfg["gpu"])
        fid = new_id("fu")
        definition = dict(base.definition, **(msg.get("definition") or {}), **limits,
                          params=msg.get("params") or {}, function_id=fid, variant_of=base.function_id)
        self._check_placeable([{"tag": base.tag, "definition": definition}])
        # A variant has values for the class's parameters: it may start containers (and keeps the class's
        # `min_containers` warm for this parameter set) even when the base pool cannot.
        deadlines = pool_config({}, definition)
        config = PoolConfig(**{**base.config.__dict__, **cfg, "unbound": False, "timeout": deadlines.timeout,
                               "startup_timeout": deadlines.startup_timeout, "batch_wait": deadlines.batch_wait})
        rec = FunctionRecord(fid, base.app_id, base.tag, definition, config, env, retries, base.is_generator)
        self.functions[fid] = rec
        self.apps[base.app_id]["functions"].append(fid)
        variants[(base.function_id, key)] = fid
        if self.apps[base.app_id].get("state") == "deployed":  # its durable calls bind it again after a restart
            self.state.add_variant(fid, base.function_id, {k: msg.get(k) for k in ("params", "config", "definition")})
        self.execute(self.scheduler.add_pool(fid, config, time.monotonic()))
        return fid

    def stop_app(self, app_id: str, reason: str, keep_deployed: bool = False) -> None:
        app = self.apps.pop(app_id, None)
        if app is None:
            return
        log.info("stopping app %s: %s", app_id, reason)
        self.schedules.stop_app(app_id)
        self.sandboxes.app_stopped(app_id)
        if self.web is not None:
            self.web.stop_app(app_id, reason)
        for fid in app["functions"]:
            self.execute(self.scheduler.remove_pool(fid, f"app stopped: {reason}"))
            self.functions.pop(fid, None)
        if not (keep_deployed and app["state"] == "deployed"):
            self.state.set_app_state(app_id, "stopped")
        remaining = {cid for cid, rec in self.containers.items() if rec.fn.app_id == app_id}
        if remaining:
            self.stopping_apps[app_id] = remaining
        else:
            self._app_stopped(app_id)

    def _app_stopped(self, app_id: str) -> None:
        """The last container of a stopped app has exited (its exit hooks have run)."""
        self.stopping_apps.pop(app_id, None)
        self.log_subscribers.pop(app_id, None)
        for fut in self._app_stop_waiters.pop(app_id, []):
            if not fut.done():
                fut.set_result(None)

    async def wait_app_stopped(self, app_id: str, timeout: float) -> bool:
        """Wait until every container of a stopped app has exited; False if `timeout` passed first."""
        if app_id not in self.stopping_apps:
            return True
        fut = asyncio.get_running_loop().create_future()
        self._app_stop_waiters.setdefault(app_id, []).append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def peer_closed(self, peer: Peer) -> None:
        if self.dictqueue is not None:  # its ephemeral Dicts and Queues go with it
            self.dictqueue.owner_closed(peer)
        for app_id in list(peer.apps):
            self.stop_app(app_id, "its client disconnected")
        for subs in self.log_subscribers.values():
            subs.discard(peer)
        for call in self.calls.values():
            if call.subscriber is peer:
                call.subscriber = None

    # --- calls -------------------------------------------------------------------------------------
    def _current(self, fid: str) -> str:
        """A redeployed function's old id stands for the current version of the same function."""
        pool = self.scheduler.pools.get(fid)
        fn = self.functions.get(fid)
        if fn is not None and (pool is None or pool.retired):
            app = self.apps.get(fn.app_id)
            current = app and app.get("by_tag", {}).get(fn.tag)
            if current and not fn.definition.get("variant_of"):
                return current
        return fid

    def create_call(self, peer: Peer | None, msg: dict[str, Any], answer: bool = True,
                    restored: bool = False, scheduled: bool = False) -> str | None:
        """Start a call; if it may not run, say why (and, with `answer`, send its inputs error outputs).

        A spawned call of a deployed app is durable: its inputs are committed before the call is
        accepted (see `State`), and `restore_calls` runs them again after a restart (`restored`). A
        schedule's run is not: the schedule itself catches up on a missed run after a restart (once)."""
        fid = msg["fid"] = self._current(msg["fid"])
        fn = self.functions.get(fid)
        call_id = msg["call"]
        kind = msg["kind"]
        if fn is None:
            text = f"function {fid} is not running (its app was stopped)"
            if answer:
                self._refuse(peer, call_id, msg["inputs"], "not_found", text)
            return text
        if _web_inputs(fn, msg["inputs"]):
            text = _WEB_CALL.format(tag=fn.tag)
            if answer:
                self._refuse(peer, call_id, msg["inputs"], "invalid", text)
            return text
        if call_id in self.calls:
            # Another caller's call: taking its id over would send its outputs here (a container
            # posing as it, or two forked copies that drew the same ids).
            text = f"function call id {call_id} is already in use"
            log.warning("refused a call: %s", text)
            if answer:
                self._refuse(peer, call_id, msg["inputs"], "invalid", text)
            return text
        call = CallRecord(call_id, fn, kind, None if kind == P.KIND_SPAWN else peer)
        call.inputs_closed = msg.get("last", True)
        self.calls[call_id] = call
        if kind == P.KIND_SPAWN and not restored:
            durable = not scheduled and (self.apps.get(fn.app_id) or {}).get("state") == "deployed"
            call.durable = durable
            if durable:
                self.state.add_call(call_id, fid, msg["inputs"])
            else:  # written with the other spawns of this event-loop turn, in one transaction
                self.state.add_call_later(call_id, fid)
                self._flush_calls_soon()
        elif restored:
            call.durable = True
        self._add_inputs(call, msg["inputs"])
        return None

    def _refuse(self, peer: Peer | None, call_id: str, inputs: list, code: str, text: str) -> None:
        """Answer inputs that will not run with an error output each (so that nothing waits for them)."""
        if peer is not None:
            out = {"code": code, "msg": text}
            peer.proto.send({"t": P.OUTPUTS, "call": call_id, "items": [[i[0], ERROR, out] for i in inputs] or [[0, ERROR, out]]})

    def put_inputs(self, peer: Peer, msg: dict[str, Any]) -> None:
        call = self.calls.get(msg["call"])
        if call is None:
            return
        call.inputs_closed = msg.get("last", False)
        refused = _web_inputs(call.fn, msg["inputs"])
        if refused:
            self._refuse(peer, call.call_id, refused, "invalid", _WEB_CALL.format(tag=call.fn.tag))
        self._add_inputs(call, [i for i in msg["inputs"] if i not in refused])
        if call.outstanding <= 0 and call.inputs_closed:
            self.calls.pop(call.call_id, None)

    def _add_inputs(self, call: CallRecord, items: list) -> None:
        ids = []
        for idx, args, method in items:
            iid = next(self._input_ids)
            self.inputs[iid] = InputRecord(iid, call, idx, args, method)
            ids.append(iid)
        call.outstanding += len(ids)
        if call.kind == P.KIND_SPAWN:
            call.input_ids.extend(ids)
        if ids:
            self.execute(self.scheduler.submit(call.fn.function_id, ids, time.monotonic()))

    async def get_call(self, call_id: str, timeout: float | None) -> dict[str, Any] | None:
        call = self.calls.get(call_id)
        if call is None:
            stored = self.state.get_call(call_id)
            if stored is None:
                raise KeyError(call_id)
            status, data = stored
            if status is None:
                return {"status": ERROR, "data": {"code": "execution", "msg": f"call {call_id} was lost when the control plane restarted"}}
            return {"status": status, "data": data}
        if call.result is None:
            fut = asyncio.get_running_loop().create_future()
            call.waiters.append(fut)
            try:
                await asyncio.wait_for(fut, timeout)
            except asyncio.TimeoutError:
                return None
            finally:
                if fut in call.waiters:
                    call.waiters.remove(fut)
        status, data = call.result
        return {"status": status, "data": data}

    def cancel_call(self, call_id: str) -> None:
        call = self.calls.get(call_id)
        if call is None:
            return
        self._send_assigned()  # a container hears of inputs before it is told to cancel them
        log.info("cancelling call %s of %s", call_id, call.fn.tag)
        ids = [i for i, inp in self.inputs.items() if inp.call is call]
        queued = set(ids)
        self.scheduler.cancel(call.fn.function_id, queued)
        by_container: dict[str, list[int]] = {}
        still_queued = []
        for iid in ids:
            holder = self.scheduler.holder_of(iid)
            if holder is None:
                still_queued.append(iid)
            else:
                by_container.setdefault(holder, []).append(iid)
        for cid, cids in by_container.items():
            rec = self.containers.get(cid)
            if rec is not None and rec.proto is not None:
                rec.proto.send({"t": P.CANCEL, "ids": cids})
        if still_queued:
            self.deliver([(self.inputs[i], P.TERMINATED, None) for i in still_queued])

    # --- introspection -----------------------------------------------------------------------------
    def container_list(self) -> list[dict[str, Any]]:
        now = time.time()
        out = []
        for cid, rec in self.containers.items():
            c = self.scheduler.containers.get(cid)
            pool = self.scheduler.pools.get(rec.fn.function_id)
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
                    "inputs_served": c.served if c else 0,
                    "running": len(c.assigned) if c else 0,
                    "timeline": rec.timeline,
                    "gpus": self._gpu_rows(rec.gpus),
                }
            )
        for pool in self.scheduler.pools.values():  # containers the plan wants that wait for a GPU
            fn = self.functions.get(pool.id)
            for _ in range(pool.waiting_for_gpu if fn is not None else 0):
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

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "address": self.address,
            "listen": self.launcher.address if self.launcher.address != self.address else None,
            "backend": self.backend.describe(),
            "started_at": self.started_at,
            "apps": [
                {"app_id": a["app_id"], "name": a["name"], "state": a["state"], "functions": len(a["functions"])}
                for a in self.apps.values()
            ],
            "containers": len(self.containers),
            "queued": sum(len(p.queue) for p in self.scheduler.pools.values()),
            "pending": sum(p.pending for p in self.scheduler.pools.values()),
            "capacity": {"cpu": self.scheduler.capacity.cpu, "memory_mib": self.scheduler.capacity.memory_mib},
            "gpus": self._gpu_status(),
        }

    def _gpu_status(self) -> list[dict[str, Any]]:
        from .gpus import as_rows

        holder = {u: cid for cid, c in self.scheduler.containers.items() for u in c.gpus}
        return [{**row, "container_id": holder.get(row["uuid"])} for row in as_rows(self.gpus)]
