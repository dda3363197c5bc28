"""The control plane: the composition root of its services.

`ControlPlane` builds each service with what it needs and keeps the entry points the connections
(`api`), the gateway (`web`), the dashboard and the supervisor use. The work is in the services:

- `executor`: the one driver of the pure scheduler (`core.scheduler`), and the instructions it answers;
- `calls`: calls, their inputs, retries and output delivery;
- `containers`: starting containers, their messages, output lines and exits;
- `apps`: ephemeral and deployed apps, deploys, history, rollback, restore, lookups, stopping;
- `functions`: a function's environment, mounts, images and variants;
- `logfeed`: log lines to the store and to live readers;
- `volumes.volume_op`: volume operations.

I/O lives in the services (connections, the backend, SQLite); decisions live in `core`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import time
from collections.abc import Callable
from typing import Any

from .. import _protocol as P
from .._wire import FramedProtocol
from ..backends import Backend
from .apps import AppService
from .calls import CallService
from .containers import ContainerService
from .core.policy import pool_config
from .core.scheduler import Capacity, FailInputs, Scheduler, StartContainer
from .dashboard import Dashboard
from .dashboard.views import gauges
from .executor import Executor
from .functions import FunctionSetup
from .images import ImageBuilder
from .launch import BuildContainers, Launcher
from .logfeed import LogFeed
from .logs import LogStore
from .observe import Observer
from .records import STOP_GRACE_SECONDS, ContainerRecord, FunctionRecord, InputRecord, Peer, Registry, new_id
from .sandboxes import Sandboxes
from .schedules import ScheduleRunner
from .secrets import SecretStore
from .state import State
from .supervision import Supervisor
from .volumes import VolumeStore, volume_op
from .web import WebEndpoints

__all__ = ["ControlPlane", "FunctionRecord", "machine_capacity", "new_id", "pool_config"]

log = logging.getLogger("homeport.server")


def machine_capacity() -> Capacity:
    """The cores and memory containers may request in all (HOMEPORT_CPU / HOMEPORT_MEMORY_MIB override)."""
    import psutil

    cpu = float(os.environ.get("HOMEPORT_CPU") or psutil.cpu_count() or 1)
    mem = int(os.environ.get("HOMEPORT_MEMORY_MIB") or psutil.virtual_memory().total // (1 << 20))
    return Capacity(cpu=cpu, memory_mib=mem)


def _web_socket_dir(state_dir: str) -> str:
    """Where containers put their web endpoints' Unix sockets: the state directory when its paths are
    short enough for a socket address (about 100 bytes), else a private directory under /tmp."""
    path = os.path.join(state_dir, "web")
    if len(path) + len("/ta-0000aaaaaaaa/w-00") > 100:
        import tempfile

        return tempfile.mkdtemp(prefix="hp-web-")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


class ControlPlane:
    def __init__(self, state: State, backend: Backend, token: str, address: str, scratch: str,
                 images: ImageBuilder | None = None, gpus: tuple | None = None) -> None:
        self.state = state
        self.images = images or ImageBuilder(os.path.join(os.path.dirname(scratch), "images"),
                                             run_container=BuildContainers(backend))
        self.backend = backend
        self.token = token
        self.address = address
        self.scratch = scratch
        self.volumes_unshared: str | None = None  # why volumes cannot be used (see volume_root)
        self._cid_counter = itertools.count(1)
        from . import gpus as _gpus

        # The machine's GPUs (NVML; `gpus` is a test's fake inventory): an empty one is no error.
        self.gpus = _gpus.discover() if gpus is None else tuple(gpus)
        self.registry = Registry()
        self.apps = self.registry.apps
        self.functions = self.registry.functions
        self.calls = self.registry.calls
        self.inputs = self.registry.inputs
        self.containers = self.registry.containers
        self.log_subscribers = self.registry.log_subscribers
        self.stopping_apps = self.registry.stopping_apps
        self.secrets: SecretStore | None = None  # set by the server's main once the key is loaded
        self.volumes: VolumeStore | None = None
        self.dictqueue: Any = None  # DictQueueStore, set by the server's main
        self.web: WebEndpoints | None = None  # web endpoints and the HTTP gateway (set by the server's main)
        self.dashboard: Dashboard | None = None  # the dashboard and /metrics (set by the server's main)
        self.web_dir = _web_socket_dir(os.path.dirname(scratch))
        self._tasks: set[asyncio.Task] = set()
        self._wake = asyncio.Event()
        self.shutdown_requested = asyncio.Event()
        self.serving = asyncio.Event()  # set once containers can connect to the control plane's socket
        self.started_at = time.time()
        self.launcher = Launcher(self.images, backend, address, self.web_dir, self.spawn)
        self.launcher.gpus = self.gpus
        self.supervisor = Supervisor(self)
        scheduler = Scheduler(self._new_container_id, machine_capacity(), gpus=self.gpus)
        self.executor = Executor(scheduler, self.registry, backend, self.spawn, self)
        self.observer = Observer(state.db, gauges=lambda: gauges(self))
        self.logs = LogStore(os.path.join(os.path.dirname(scratch), "logs.db"))  # what `app logs` reads
        self.log_feed = LogFeed(self.registry, self.executor, self.logs, self.observer)
        web = lambda: self.web  # noqa: E731 (set after construction by the server's main)
        self.call_service = CallService(self.registry, self.executor, state, self.observer, web)
        self.schedules = ScheduleRunner(state, self.call_service.run_scheduled)
        self.function_setup = FunctionSetup(self.registry, self.executor, state, backend, self.launcher,
                                            self.call_service, lambda: self.secrets,
                                            lambda: (self.volumes, self.volumes_unshared))
        self.sandboxes = Sandboxes(self)
        self.app_service = AppService(self.registry, self.executor, state, backend, self.launcher,
                                      self.function_setup, self.call_service, self.schedules, self.sandboxes,
                                      web, self.spawn)
        self.container_service = ContainerService(self.registry, self.executor, backend, self.launcher,
                                                  self.call_service, self.supervisor, self.log_feed,
                                                  self.observer, self.spawn, self.serving, web,
                                                  self.app_service.app_stopped, self.sandboxes, self.gpus)

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
            deadline = self.executor.next_deadline()
            delay = 1.0 if deadline is None else min(1.0, max(0.05, deadline - time.monotonic()))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except asyncio.TimeoutError:
                pass
            try:
                self.executor.tick()
            except Exception:  # one bad instruction must not stop every pool's scaling and deadlines
                log.exception("executing the scheduler's tick failed")

    async def close(self) -> None:
        self.container_service.closing = True  # what containers were running fails with why: we stopped
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

    # --- what the executor asks of the services (`executor.Effects`) -------------------------------
    def start_container(self, ins: StartContainer) -> None:
        self.container_service.start_container(ins)

    def fail_inputs(self, ins: FailInputs) -> None:
        self.call_service.fail_inputs(ins)

    # --- entry points: calls -----------------------------------------------------------------------
    def create_call(self, peer: Peer | None, msg: P.Call, answer: bool = True,
                    restored: bool = False, scheduled: bool = False) -> str | None:
        return self.call_service.create_call(peer, msg, answer, restored, scheduled)

    def put_inputs(self, peer: Peer, msg: P.MapPut) -> None:
        self.call_service.put_inputs(peer, msg)

    def _refuse(self, peer: Peer | None, call_id: str, inputs: list, code: str, text: str) -> None:
        self.call_service.refuse(peer, call_id, inputs, code, text)

    async def get_call(self, call_id: str, timeout: float | None) -> dict[str, Any] | None:
        return await self.call_service.get_call(call_id, timeout)

    def cancel_call(self, call_id: str) -> None:
        self.call_service.cancel_call(call_id)

    def retry_later(self, inp: InputRecord) -> bool:
        return self.call_service.retry_later(inp)

    def deliver(self, items: list[tuple[InputRecord, int, Any]]) -> None:
        self.call_service.deliver(items)

    # --- entry points: containers ------------------------------------------------------------------
    def container_hello(self, proto: FramedProtocol, msg: dict[str, Any]) -> dict[str, Any] | None:
        return self.container_service.container_hello(proto, msg)

    def container_credentials_ok(self, cid: str, token: str) -> bool:
        return self.container_service.container_credentials_ok(cid, token)

    def container_message(self, cid: str, msg: P.FromContainer) -> None:
        self.container_service.container_message(cid, msg)

    def container_closed(self, cid: str) -> None:
        self.container_service.container_closed(cid)

    def container_list(self) -> list[dict[str, Any]]:
        return self.container_service.container_list()

    def container_exec_info(self, cid: str) -> dict[str, Any]:
        return self.container_service.container_exec_info(cid)

    def stop_container(self, cid: str, reason: str) -> bool:
        return self.executor.stop_container(cid, reason)

    async def tunnel_op(self, peer: Peer, msg: P.Tunnel) -> Any:
        return await self.container_service.tunnel_op(peer, msg)

    def record_log(self, rec: ContainerRecord, stream: str, data: str) -> None:
        self.log_feed.record_log(rec, stream, data)

    # --- entry points: apps and functions ----------------------------------------------------------
    def create_app(self, peer: Peer, msg: P.AppCreate) -> str:
        return self.app_service.create_app(peer, msg)

    async def publish_app(self, msg: P.AppPublish) -> dict[str, Any]:
        return await self.app_service.publish_app(msg)

    def deploy_app(self, peer: Peer | None, msg: P.AppDeploy) -> dict[str, Any]:
        return self.app_service.deploy_app(peer, msg)

    async def deploy_app_web(self, peer: Peer | None, msg: P.AppDeploy) -> dict[str, Any]:
        return await self.app_service.deploy_app_web(peer, msg)

    async def rollback_app(self, peer: Peer | None, msg: P.AppRollback) -> dict[str, Any]:
        return await self.app_service.rollback_app(peer, msg)

    async def restore_deployed(self) -> None:
        await self.app_service.restore_deployed()

    def lookup_function(self, msg: P.FunctionLookup) -> dict[str, Any]:
        return self.app_service.lookup_function(msg)

    def lookup_app(self, msg: P.AppLookup) -> dict[str, Any]:
        return self.app_service.lookup_app(msg)

    def list_apps(self) -> list[dict[str, Any]]:
        return self.app_service.list_apps()

    def app_history(self, name: str) -> list[dict[str, Any]]:
        return self.app_service.app_history(name)

    def stop_app(self, app_id: str, reason: str, keep_deployed: bool = False) -> None:
        self.app_service.stop_app(app_id, reason, keep_deployed)

    async def wait_app_stopped(self, app_id: str, timeout: float) -> bool:
        return await self.app_service.wait_app_stopped(app_id, timeout)

    def _deployed_by_name(self, name: str) -> str | None:
        return self.app_service.deployed_by_name(name)

    def bind_function(self, msg: P.FunctionBind) -> str:
        return self.function_setup.bind_function(msg)

    async def build_images(self, requests: list[dict[str, Any]], on_log: Callable[[str, str, int], None]) -> list[str]:
        return await self.function_setup.build_images(requests, on_log)

    def _function_env(self, cfg: dict[str, Any]) -> dict[str, str]:
        return self.function_setup.function_env(cfg)

    def _function_mounts(self, cfg: dict[str, Any]) -> list[list[str]]:
        return self.function_setup.function_mounts(cfg)

    # --- entry points: logs, volumes ---------------------------------------------------------------
    def query_logs(self, msg: P.LogQuery) -> dict[str, Any]:
        return self.log_feed.query_logs(msg)

    def subscribe_logs(self, peer: Peer, app_id: str) -> None:
        self.log_feed.subscribe_logs(peer, app_id)

    def volume_op(self, peer: Peer, msg: P.Volume) -> Any:
        if self.volumes is None:
            raise LookupError("volumes are not available on this control plane")
        return volume_op(self.volumes, msg)

    # --- introspection -----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        pools = self.executor.pools()
        capacity = self.executor.capacity
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
            "queued": sum(len(p.queue) for p in pools),
            "pending": sum(p.pending for p in pools),
            "capacity": None if capacity is None else {"cpu": capacity.cpu, "memory_mib": capacity.memory_mib},
            "gpus": self._gpu_status(),
        }

    def _gpu_status(self) -> list[dict[str, Any]]:
        from .gpus import as_rows

        holder = self.executor.gpu_holders()
        return [{**row, "container_id": holder.get(row["uuid"])} for row in as_rows(self.gpus)]
