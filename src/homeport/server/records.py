"""What the control plane keeps about clients, functions, calls, inputs and containers (plain records)."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import _protocol as P
from .._protocol.definition import FunctionDefinition, definition_from_wire
from .._wire import FramedProtocol
from ..backends import ExitInfo
from .core.scheduler import PoolConfig

# How long a container asked to stop may run its exit hooks before it is killed.
STOP_GRACE_SECONDS = 10.0
ERROR = P.ERROR  # output status for a platform error: data is {"code": ..., "msg": ...}


def new_id(prefix: str) -> str:
    """An id of a control-plane object: "ap-…" (app), "fu-…" (function), "fc-…" (function call)."""
    return f"{prefix}-{uuid.uuid4().hex[:22]}"


@dataclass(eq=False)
class Peer:
    """A connected SDK client."""

    proto: FramedProtocol
    apps: set[str] = field(default_factory=set)  # ephemeral apps stopped when the client leaves
    # User code inside this container, connected with its credentials: it may send only what
    # `access.container_refusal` allows.
    container_id: str | None = None


@dataclass
class FunctionRecord:
    function_id: str
    app_id: str
    tag: str
    definition: dict[str, Any]
    config: PoolConfig
    env: dict[str, str]
    retries: dict[str, Any] | None
    is_generator: bool
    start_failure_key: str | None = None  # the last start-up failure shown to the app's log readers
    input_seconds: float | None = None  # observed wall time of one input run on its own
    chunk_seconds: float | None = None  # observed wall time of one input of a map's chunk (how chunks are cut)

    @functools.cached_property
    def defn(self) -> FunctionDefinition:
        """The definition typed, its defaults filled in: what readers use (`definition` is the map as it
        is kept and sent to the function's containers)."""
        return definition_from_wire(self.definition)


@dataclass
class CallRecord:
    call_id: str
    fn: FunctionRecord
    kind: str
    subscriber: Peer | None
    outstanding: int = 0
    inputs_closed: bool = True
    result: tuple[int, Any] | None = None  # spawned calls keep their output
    waiters: list[asyncio.Future] = field(default_factory=list)
    input_ids: list[int] = field(default_factory=list)
    durable: bool = False  # a spawned call whose inputs are stored (it runs again after a restart)


@dataclass
class InputRecord:
    """One input of a call, or a map's chunk of inputs `idx`, `idx + 1`, ... (`args` is then a list):
    the scheduler queues and assigns a chunk as one; each of its inputs still runs, is retried, timed
    out and reported on its own (see `calls.CallService.chunk_outputs`)."""

    input_id: int
    call: CallRecord
    idx: int
    args: bytes | list[Any]  # (a chunk's: as `P.CallInput.args`)
    method: str | None
    attempt: int = 0
    seconds: float = 0.0  # how long its last run took in the container (a chunk's: its inputs' so far)
    left: set[int] | None = None  # a chunk's keys still to run, once some are done (None: all of them)
    sent: list[int] | None = None  # a chunk's keys its container was sent, in order, once not all of them

    def keys_left(self) -> list[int]:
        """A chunk's keys still to run, in order."""
        return list(range(len(self.args))) if self.left is None else sorted(self.left)


@dataclass
class ContainerRecord:
    container_id: str
    fn: FunctionRecord
    token: str
    started_at: float
    proto: FramedProtocol | None = None
    pid: int | None = None
    ready_at: float | None = None
    timeline: dict[str, float] = field(default_factory=dict)
    init_failure: dict[str, Any] | None = None
    state: str = "starting"
    exit_info: ExitInfo | None = None  # the process exited; waiting for its connection to drain
    web_prefix: str | None = None  # its web endpoints listen on "<prefix>-<index>" (Unix sockets)
    stop_requested_at: float | None = None  # asked to stop gracefully (SIGTERM, then SIGKILL after the grace)
    killed_because: str | None = None  # the control plane killed it at once (a deadline), and why
    last_heard: float = 0.0  # monotonic time of its last message (see `liveness`)
    silent_since: float | None = None  # reported as not answering (see `liveness`)
    gpus: tuple[str, ...] = ()  # UUIDs of the GPUs it holds
    exit_hooks: bool = False  # it said, once ready, that it has exit hooks to run when asked to stop
    env: dict[str, str] | None = None  # its environment, less its credentials (for `container exec`)
    last_call_id: str | None = None  # the call of the last input it finished (its late log lines are that call's)
    chunk_inputs: int = 0  # inputs beyond one per chunk it finished (the scheduler counts a chunk as one)


@dataclass(eq=False)
class Registry:
    """What the control plane's services share: the live apps, functions, calls, inputs and containers,
    and who reads each app's logs. Each service owns its changes to these; the tables are plain data."""

    apps: dict[str, dict[str, Any]] = field(default_factory=dict)
    functions: dict[str, FunctionRecord] = field(default_factory=dict)
    calls: dict[str, CallRecord] = field(default_factory=dict)
    inputs: dict[int, InputRecord] = field(default_factory=dict)
    containers: dict[str, ContainerRecord] = field(default_factory=dict)
    log_subscribers: dict[str, set[Peer]] = field(default_factory=dict)
    # Stopped apps whose containers are still running their exit hooks: app id -> container ids.
    # Their logs keep flowing to the client until the last one exits.
    stopping_apps: dict[str, set[str]] = field(default_factory=dict)

    def queued_inputs(self, queue: Iterable[int]) -> int:
        """How many inputs wait in a pool's `queue`: the scheduler queues a map's chunk as one, and here
        each input it has still to run counts (a web request, not an input record, counts as one)."""
        n = 0
        inputs = self.inputs
        for input_id in queue:
            rec = inputs.get(input_id)
            if rec is None or not isinstance(rec.args, list):
                n += 1
            else:
                n += len(rec.args) if rec.left is None else len(rec.left)
        return n

    def deployed_by_name(self, name: str) -> str | None:
        """The id of the live deployed app named `name`, if any."""
        for app in self.apps.values():
            if app["state"] == "deployed" and app["name"] == name:
                return app["app_id"]
        return None
