"""The control plane: the composition root of its services.

`ControlPlane` builds each service with what it needs; the connections (`api`), the dashboard and the
server's main call the services themselves. The work is in the services:

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
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import psutil

from .. import _protocol as P
from ..backends import Backend
from .apps import AppService
from .calls import CallService
from .containers import ContainerService
from .core.policy import pool_config
from .core.scheduler import Capacity, FailInputs, Pool, Scheduler, StartContainer
from .dashboard import Dashboard
from .dashboard.views import gauges
from .executor import Executor
from .functions import FunctionSetup
from .gpus import as_rows, discover
from .images import BuildContainers, ImageBuilder
from .launch import Launcher
from .liveness import watch_containers
from .logfeed import LogFeed
from .logs import LogQuery, LogStore
from .observe import Observer
from .records import STOP_GRACE_SECONDS, ContainerRecord, FunctionRecord, Peer, Registry, new_id
from .sandbox_launch import SandboxLauncher
from .sandboxes import Sandboxes
from .schedules import ScheduleRunner
from .secrets import SecretStore
from .state import State
from .supervision import Supervisor
from .volumes import VolumeStore
from .web import Route, WebEndpoints

__all__ = ["ControlPlane", "FunctionRecord", "machine_capacity", "new_id", "pool_config"]

log = logging.getLogger("homeport.server")


def machine_capacity() -> Capacity:
    """The cores and memory containers may request in all (HOMEPORT_CPU / HOMEPORT_MEMORY_MIB override)."""
    cpu = float(os.environ.get("HOMEPORT_CPU") or psutil.cpu_count() or 1)
    mem = int(os.environ.get("HOMEPORT_MEMORY_MIB") or psutil.virtual_memory().total // (1 << 20))
    return Capacity(cpu=cpu, memory_mib=mem)


def web_socket_dir(state_dir: str) -> str:
    """Where containers put their web endpoints' Unix sockets: the state directory when its paths are
    short enough for a socket address (about 100 bytes), else a private directory under /tmp."""
    path = os.path.join(state_dir, "web")
    if len(path) + len("/ta-0000aaaaaaaa/w-00") > 100:
        return tempfile.mkdtemp(prefix="hp-web-")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


class ControlPlane:
    def __init__(self, state: State, backend: Backend, token: str, address: str, scratch: str,
                 images: ImageBuilder | None = None, gpus: tuple | None = None, web_dir: str | None = None) -> None:
        self.state = state
        self.images = images or ImageBuilder(os.path.join(os.path.dirname(scratch), "images"),
                                             run_container=BuildContainers(backend))
        self.backend = backend
        self.token = token
        self.address = address
        self.scratch = scratch
        self.volumes_unshared: str | None = None  # why volumes cannot be used (see volume_root)
        self._cid_counter = itertools.count(1)
        # The machine's GPUs (NVML; `gpus` is a test's fake inventory): an empty one is no error.
        self.gpus = discover() if gpus is None else tuple(gpus)
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
        self.web_dir = web_dir or web_socket_dir(os.path.dirname(scratch))
        self._tasks: set[asyncio.Task] = set()
        self._wake = asyncio.Event()
        self.shutdown_requested = asyncio.Event()
        self.serving = asyncio.Event()  # set once containers can connect to the control plane's socket
        self.started_at = time.time()
        self.launcher = Launcher(self.images, backend, address, self.web_dir, self.spawn)
        self.launcher.gpus = self.gpus
        scheduler = Scheduler(self._new_container_id, machine_capacity(), gpus=self.gpus)
        self.executor = Executor(scheduler, self.registry, backend, self.spawn, self)
        self.dashboard_reads = DashboardReads(self)  # what the dashboard and /metrics read
        self.observer: Observer = Observer(state.db, gauges=lambda: gauges(self.dashboard_reads))
        self.logs = LogStore(os.path.join(os.path.dirname(scratch), "logs.db"))  # what `app logs` reads
        self.log_feed = LogFeed(self.registry, self.executor, self.logs, self.observer)
        web = lambda: self.web  # noqa: E731 (set after construction by the server's main)
        self.call_service = CallService(self.registry, self.executor, state, self.observer, web)
        self.supervisor = Supervisor(self.registry, self.call_service, self.log_feed.record_log, backend, self.spawn)
        self.schedules = ScheduleRunner(state, self.call_service.run_scheduled)
        self.function_setup = FunctionSetup(self.registry, self.executor, state, backend, self.launcher,
                                            self.call_service, lambda: self.secrets,
                                            lambda: (self.volumes, self.volumes_unshared))
        self.sandboxes = Sandboxes(self.registry, SandboxLauncher(self.function_setup, self.launcher, self.web_dir,
                                                                  scratch, address),
                                   backend, self.serving, self.spawn)
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
        self.spawn(watch_containers(self.containers, self.supervisor))  # containers that stop answering are reported
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
            self.app_service.stop_app(app_id, "control plane shutting down", keep_deployed=True)
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
            self.app_service.stop_app(app_id, "its client disconnected")
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
            "queued": sum(self.registry.queued_inputs(p.queue) for p in pools),
            "pending": sum(p.pending for p in pools),
            "capacity": None if capacity is None else {"cpu": capacity.cpu, "memory_mib": capacity.memory_mib},
            "gpus": self._gpu_status(),
        }

    def _gpu_status(self) -> list[dict[str, Any]]:
        holder = self.executor.gpu_holders()
        return [{**row, "container_id": holder.get(row["uuid"])} for row in as_rows(self.gpus)]


class DashboardReads:
    """The dashboard's read model of the control plane (`dashboard.views.ControlPlaneReads`): what its
    pages and `/metrics` read, and the rollback it offers; nothing else of the control plane."""

    def __init__(self, cp: ControlPlane) -> None:
        self._cp = cp

    @property
    def started_at(self) -> float:
        return self._cp.started_at

    @property
    def apps(self) -> Mapping[str, dict[str, Any]]:
        return self._cp.registry.apps

    @property
    def functions(self) -> Mapping[str, FunctionRecord]:
        return self._cp.registry.functions

    @property
    def containers(self) -> Mapping[str, ContainerRecord]:
        return self._cp.registry.containers

    def pools(self) -> list[Pool]:
        return self._cp.executor.pools()

    def pool(self, function_id: str) -> Pool | None:
        return self._cp.executor.pool(function_id)

    def queued(self, pool: Pool) -> int:
        return self._cp.registry.queued_inputs(pool.queue)

    def app_list(self) -> list[dict[str, Any]]:
        return self._cp.app_service.list_apps()

    def deployments(self, app_id: str) -> list[dict[str, Any]]:
        return self._cp.state.deployments(app_id)

    def next_runs(self) -> dict[tuple[str, str], float]:
        return self._cp.schedules.next_runs()

    def container_list(self) -> list[dict[str, Any]]:
        return self._cp.container_service.container_list()

    def volume_list(self) -> list[dict[str, Any]]:
        return self._cp.volumes.list() if self._cp.volumes is not None else []

    def secret_list(self) -> list[dict[str, Any]]:
        return self._cp.secrets.list() if self._cp.secrets is not None else []

    def web_routes(self) -> list[tuple[str, str, Route]]:
        web = self._cp.web
        return [] if web is None else [(label, web.url(route.port), route) for label, route in web.routes.items()]

    def status(self) -> dict[str, Any]:
        return self._cp.status()

    def log_lines(self, query: LogQuery) -> list[dict[str, Any]]:
        return self._cp.logs.query(query)

    async def rollback(self, name: str, version: int | None) -> dict[str, Any]:
        return await self._cp.app_service.rollback_app(None, P.AppRollback(name=name, version=version))
