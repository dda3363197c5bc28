"""What the scheduler (`core.scheduler`) keeps per function pool and per container, and the
instructions it answers events with. Plain data: only the scheduler changes it."""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PoolConfig:
    """Scaling settings of one function (or one class parameter set)."""

    min_containers: int = 0
    max_containers: int | None = None
    buffer_containers: int = 0
    scaledown_window: float = 60.0
    max_inputs: int = 1  # inputs one container runs at once
    target_inputs: int | None = None  # the autoscaler aims for this many per container
    cpu: float = 0.125  # cores requested per container (Modal's default), used for admission
    memory_mib: int = 128  # memory requested per container (Modal's default), used for admission
    timeout: float | None = None  # seconds one input may run (None: no deadline)
    startup_timeout: float | None = None  # seconds from a container's hello to ready (None: no deadline)
    batch_wait: float = 0.0  # `@modal.batched` wait: a batch may start this long after its first input
    # A class's base pool when the class has required parameters: without values its enter hooks cannot
    # run, so it never starts containers; each bound variant (one per parameter set) is a pool of its own.
    unbound: bool = False
    # Hand a container more inputs than it runs at once when inputs are short. Not for web requests:
    # an assigned request goes to its container at once, so a container may hold only what it can run.
    prefetch: bool = True
    # An ephemeral app's pool fails its queue after `POOL_CRASH_LIMIT` crashes in a row; a deployed
    # app's never does (it backs off and keeps restarting).
    fail_on_crashes: bool = True
    # `gpu=`: ((type, count), ...) in order of preference (see `core.gpus`); each container holds its
    # devices whole until it exits.
    gpu: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Capacity:
    """What this machine offers to containers; the sum of their requests never exceeds it."""

    cpu: float
    memory_mib: int


class Phase(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"


@dataclass
class Container:
    id: str
    pool: str
    phase: Phase
    started_at: float
    last_active: float
    assigned: dict[int, None] = field(default_factory=dict)  # insertion-ordered input ids
    # The assigned inputs counted as running, with since when: always the first `max_inputs` of
    # `assigned` (a container runs what it holds in order). An input's clock starts when it is assigned
    # to a free slot or when an earlier input's output frees one, never before it really started.
    running: dict[int, float] = field(default_factory=dict)
    connected_at: float | None = None  # its runtime said hello: the start-up clock runs
    start_failed: bool = False  # timed out in start-up: the pool's backoff already counts it
    served: int = 0
    leaving: bool = False  # it said it will exit: nothing it still holds was started
    gpus: tuple[str, ...] = ()  # UUIDs of the GPUs it holds (until it exits)


@dataclass
class Pool:
    id: str
    config: PoolConfig
    queue: deque[int] = field(default_factory=deque)
    containers: dict[str, Container] = field(default_factory=dict)
    ewma_seconds: float | None = None  # observed time per input
    cpu_share: float | None = None  # observed cpu time / wall time of inputs (near 1: cpu-bound)
    active: bool = True
    pending: int = 0  # containers the plan wants that wait for free cpu or memory
    retired: bool = False  # an old version: drains, then goes
    start_failures: int = 0  # containers that failed during start-up in a row
    restart_at: float = 0.0  # no container starts before this (the restart backoff)
    crashes: int = 0  # containers that crashed in a row, with no input completing in between
    input_crashes: dict[int, int] = field(default_factory=dict)  # input id -> crashed containers it ran in
    waiting_for_gpu: int = 0  # of `pending`: containers that wait for a matching GPU to be free
    # Nothing of the pool can pass a deadline before this (see `_expire`): a tick skips the scan.
    expire_after: float = -math.inf
    # Queued or held inputs whose caller blocks on each one (`.remote()`, `.remote_gen()`): each is a
    # caller waiting, so they count as demand whatever the backlog's drain time (see `plan`). May hold
    # ids already gone (an input that failed): `plan` counts at most the pool's backlog, `tick` prunes.
    callers: set[int] = field(default_factory=set)


# --- instructions ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class StartContainer:
    pool: str
    container: str
    reason: str
    gpus: tuple[str, ...] = ()  # UUIDs of the GPUs it gets


@dataclass(frozen=True)
class StopContainer:
    container: str
    reason: str


@dataclass(frozen=True)
class Assign:
    container: str
    inputs: tuple[int, ...]


@dataclass(frozen=True)
class FailInputs:
    """Inputs that can no longer run; `lost` ones were running when their container died."""

    inputs: tuple[int, ...]
    reason: str
    lost: bool = False


@dataclass(frozen=True)
class RequeueInputs:
    """Inputs a dead container held but had not started; they go back to the front of the queue."""

    inputs: tuple[int, ...]


@dataclass(frozen=True)
class InputsTimedOut:
    """Inputs that ran past `timeout` plus the grace without an output: the container did not stop them
    itself. They fail with a timeout and the container is killed; what else it held went back to the
    queue (a `RequeueInputs` follows)."""

    container: str
    inputs: tuple[int, ...]
    timeout: float


@dataclass(frozen=True)
class StartupTimedOut:
    """A container still not ready `startup_timeout` plus the grace after its hello: kill it; it counts
    as a start-up failure when it exits."""

    container: str
    startup_timeout: float


@dataclass(frozen=True)
class RestartBackoff:
    """Container `container` of the pool failed during start-up (`failures` in a row): no other starts
    for `delay` seconds."""

    pool: str
    container: str
    failures: int
    delay: float


Instruction = (StartContainer | StopContainer | Assign | FailInputs | RequeueInputs | InputsTimedOut
               | StartupTimedOut | RestartBackoff)
