"""The Ray backend: every container is a Ray actor, placed by Ray across the cluster's nodes.

The control plane, its state and the gateway stay where they run; each actor runs its container on its
node with the local backend (same sandbox, cgroup and cleanup) and reports output and exit back. Ray
places the actor by the container's requests (`cpu`, `memory`, `gpu`, `region`; see `_placement`).

What this backend needs from the cluster (and says so when it is missing):
- images: each node builds the image environments its containers run, in its own cache
  (`HOMEPORT_NODE_IMAGES`), by the control plane's content hashes (`_images`); apt_install, run_commands and
  run_function steps are not built on nodes (UnimplementedError naming them). Files added at container
  start (`copy=False`) and volumes must be on storage every node sees (HOMEPORT_SHARED_ROOT).
- web endpoints and Sandboxes run on the control plane's own node (the gateway and the sandbox agents use
  its Unix sockets), said once per function in the log; one whose requests that node cannot hold fails.
- containers start as fresh interpreters: the fork-from-template fast path and memory snapshots work
  within one machine's process tree, so on Ray they degrade to a plain start (logged once per app).
- the scheduler's capacity is the cluster's cores and memory (`capacity()`), read again as nodes join.

A node that dies takes its containers with it: each is reported as killed, and the control plane
reschedules their inputs as for any crashed container.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from typing import Any

import ray
from ray.exceptions import RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..._protocol import ENV_RAY_ADDRESS
from ...image_builder import ImageBuildFailed, ImageUnsupported
from .._base import Backend, ContainerSpec, ExitCallback, ExitInfo, OutputCallback, PrivateDir
from ._actor import ContainerHost, NodeLacksPath
from ._images import NodeImageUnbuildable
from ._placement import Unplaceable, actor_options, cluster_capacity, home_options, pinned_home

log = logging.getLogger("homeport.backend.ray")

NAMESPACE = "homeport"
CAPACITY_REFRESH_SECONDS = 2.0  # how stale the cluster's capacity may be (nodes join and leave)


class PlacementError(RuntimeError):
    """Raised by `start` when no node of the cluster can ever run the container."""


class _Actor:
    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.started = False  # its container runs (until then the actor may wait for a node with room)
        self.cancelled = False  # stopped while it waited: it was killed before it ran anything
        self.node: str | None = None
        self.pump: asyncio.Task | None = None
        self.exited = asyncio.Event()


class RayBackend(Backend):
    name = "ray"
    places_by_region = True
    spans_machines = True
    places_gpus = True  # Ray assigns them to the actor; the container sees them (CUDA_VISIBLE_DEVICES)

    def __init__(self, scratch_dir: str | None = None, private: PrivateDir | None = None,
                 address: str | None = None) -> None:
        self._scratch = scratch_dir
        self._private = private
        self.address = address or os.environ.get(ENV_RAY_ADDRESS) or "auto"
        if not ray.is_initialized():
            ray.init(address=self.address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.ERROR)
        self._actors: dict[str, _Actor] = {}
        self._told: set[str] = set()
        self._pinned: set[str] = set()  # functions whose containers were said to stay on this node
        self.home = ray.get_runtime_context().get_node_id()  # the control plane's node
        self._capacity = cluster_capacity(ray.cluster_resources())
        self._capacity_at = time.monotonic()
        self._refreshing = False

    def _nodes(self) -> list[dict[str, Any]]:
        return ray.nodes()

    def _home_node(self) -> dict[str, Any]:
        for node in self._nodes():
            if node.get("NodeID") == self.home:
                return node
        raise Unplaceable(f"the control plane's own Ray node {self.home} is not in the cluster")

    async def start(self, spec: ContainerSpec, on_output: OutputCallback, on_exit: ExitCallback) -> int:
        pinned = pinned_home(spec.env)
        try:
            if pinned is None:
                options = actor_options(spec.placement, self._nodes())
            else:
                options = home_options(spec.placement, self._home_node(), pinned)
                options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(self.home, soft=False)
                if spec.function_tag not in self._pinned:
                    self._pinned.add(spec.function_tag)
                    log.info("'%s' runs on the control plane's Ray node %s: it is %s", spec.function_tag,
                             self.home, pinned)
        except Unplaceable as exc:
            raise PlacementError(f"'{spec.function_tag}' cannot run on this Ray cluster: {exc}") from None
        if spec.template is not None and spec.app_id not in self._told:
            self._told.add(spec.app_id)
            on_output(spec.container_id, 2, b"homeport: on the Ray backend containers start as fresh "
                      b"interpreters (templates and memory snapshots are per machine)\n")
        handle = ContainerHost.options(  # type: ignore[attr-defined]  # @ray.remote adds .options; ray's types do not
            name=spec.container_id, **options).remote(self._scratch, self._private)
        actor = self._actors[spec.container_id] = _Actor(handle)
        try:
            pid, actor.node = await handle.start.remote(spec)
        except BaseException as exc:
            self._actors.pop(spec.container_id, None)
            with contextlib.suppress(Exception):
                ray.kill(handle)
            if actor.cancelled:  # stopped while Ray had no node with room for it: it exits, stopped
                asyncio.get_running_loop().call_soon(on_exit, spec.container_id, ExitInfo(None, signal.SIGTERM))
                return 0
            cause = getattr(exc, "cause", None)  # a RayTaskError carries the actor's own exception
            if isinstance(cause, (NodeLacksPath, NodeImageUnbuildable, ImageBuildFailed, ImageUnsupported)):
                raise type(cause)(str(cause)) from None
            raise
        actor.started = True
        actor.pump = asyncio.get_running_loop().create_task(self._pump(spec.container_id, actor, on_output, on_exit))
        return pid

    async def _pump(self, cid: str, actor: _Actor, on_output: OutputCallback, on_exit: ExitCallback) -> None:
        info: ExitInfo | None = None
        try:
            while info is None:
                for event in await actor.handle.next_events.remote():
                    if event[0] == "out":
                        on_output(cid, event[1], event[2])
                    else:
                        info = ExitInfo(event[1], event[2], event[3])
        except RayError as exc:  # its actor, or the node it ran on, is gone
            log.warning("container %s lost with its Ray actor on node %s: %s", cid, actor.node, type(exc).__name__)
            on_output(cid, 2, f"homeport: the Ray node {actor.node} running this container was lost\n".encode())
            info = ExitInfo(None, signal.SIGKILL)
        finally:
            self._actors.pop(cid, None)
            actor.exited.set()
            with contextlib.suppress(Exception):
                ray.kill(actor.handle)
        on_exit(cid, info)

    def capacity(self) -> tuple[float, int]:
        """The cluster's cores and memory (all its live nodes'), refreshed in the background: asked on
        every scheduler tick, it answers with what it last read."""
        if not self._refreshing and time.monotonic() - self._capacity_at > CAPACITY_REFRESH_SECONDS:
            self._refreshing = True
            threading.Thread(target=self._refresh_capacity, name="homeport-ray-capacity", daemon=True).start()
        return self._capacity

    def _refresh_capacity(self) -> None:
        try:
            self._capacity = cluster_capacity(ray.cluster_resources())
        except Exception as exc:  # the cluster is unreachable for now: the last figure stands
            log.warning("could not read the Ray cluster's resources: %s", exc)
        finally:
            self._capacity_at = time.monotonic()
            self._refreshing = False

    def listen_default(self) -> str:
        """This node's address in the Ray cluster (the one the other nodes reach it by), a free port."""
        from ray._private.worker import global_worker

        return f"{global_worker.node_ip_address}:0"

    def where(self, container_id: str) -> str | None:
        actor = self._actors.get(container_id)
        return actor.node if actor is not None else None

    def _cancel_pending(self, actor: _Actor) -> bool:
        """An actor still waiting for a node runs nothing to stop: it is killed (its method calls would
        wait as long as it does)."""
        if actor.started:
            return False
        actor.cancelled = True
        with contextlib.suppress(Exception):
            ray.kill(actor.handle)
        return True

    async def stop(self, container_id: str, grace: float) -> None:
        actor = self._actors.get(container_id)
        if actor is not None and not self._cancel_pending(actor):
            with contextlib.suppress(RayError):
                await actor.handle.stop.remote(grace)

    async def kill(self, container_id: str) -> None:
        actor = self._actors.get(container_id)
        if actor is not None and not self._cancel_pending(actor):
            with contextlib.suppress(RayError):
                await actor.handle.kill.remote()

    async def close(self, grace: float) -> None:
        actors = list(self._actors.values())
        for actor in actors:
            if not self._cancel_pending(actor):
                with contextlib.suppress(RayError):
                    await actor.handle.stop.remote(grace)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(a.exited.wait() for a in actors if a.started)), grace + 5)
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.kill(actor.handle)

    def describe(self) -> dict[str, object]:
        nodes = [n for n in self._nodes() if n.get("Alive")]
        return {"name": self.name, "address": self.address, "nodes": len(nodes), "node": self.home}
