"""The Ray actor that is one container: placed by Ray, it runs the container on its node with the local
backend (the same sandbox, cgroup and cleanup as on one machine) and hands its output and exit to the
control plane, which long-polls `events`."""

from __future__ import annotations

import asyncio
import dataclasses
import os

import ray

from .._base import ContainerSpec, ExitInfo, PrivateDir
from ..local import LocalBackend
from ._images import NodeImages
from ._paths import missing_on_node

ENV_NODE_ID = "HOMEPORT_NODE_ID"  # in a container on Ray: the Ray node it runs on
EVENT_BATCH = 1000


class NodeLacksPath(RuntimeError):
    """The node does not see a path of the control plane's machine the container needs."""


@ray.remote(max_restarts=0, max_task_retries=0)
class ContainerHost:
    def __init__(self, scratch_dir: str | None, private: PrivateDir | None) -> None:
        if scratch_dir:
            os.makedirs(scratch_dir, exist_ok=True)
        self.backend = LocalBackend(scratch_dir, private)
        self.images = NodeImages()
        self.events: asyncio.Queue | None = None
        self.container_id: str | None = None

    async def start(self, spec: ContainerSpec) -> tuple[int, str]:
        self.events = asyncio.Queue()
        self.container_id = spec.container_id
        node = ray.get_runtime_context().get_node_id()
        events = self.events

        def on_build_output(line: str, fd: int) -> None:  # the image's build log, as the container's output
            events.put_nowait(("out", fd, f"[node {node[:8]}] {line}\n".encode()))

        spec = await self.images.ensure(spec, on_build_output)
        problem = missing_on_node(spec, node)
        if problem is not None:
            raise NodeLacksPath(problem)

        def on_output(_cid: str, fd: int, line: bytes) -> None:
            events.put_nowait(("out", fd, line))

        def on_exit(_cid: str, info: ExitInfo) -> None:
            events.put_nowait(("exit", info.returncode, info.signal, info.oom_limit_mib))

        # Templates are per machine: a container alone on its actor starts as a fresh interpreter.
        env = {**spec.env, ENV_NODE_ID: node}
        gpus = ray.get_runtime_context().get_accelerator_ids().get("GPU") or []
        if gpus:  # the GPUs Ray gave this actor, and only those
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
        spec = dataclasses.replace(spec, template=None, env=env)
        pid = await self.backend.start(spec, on_output, on_exit)
        return pid, node

    async def next_events(self) -> list[tuple]:
        """What happened since the last call, waiting for at least one event."""
        assert self.events is not None
        out = [await self.events.get()]
        while len(out) < EVENT_BATCH and not self.events.empty():
            out.append(self.events.get_nowait())
        return out

    async def stop(self, grace: float) -> None:
        if self.container_id is not None:
            await self.backend.stop(self.container_id, grace)

    async def kill(self) -> None:
        if self.container_id is not None:
            await self.backend.kill(self.container_id)

    async def close(self, grace: float) -> None:
        await self.backend.close(grace)
