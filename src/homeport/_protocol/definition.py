"""A function's definition and its pool settings: what the SDK publishes, the control plane keeps and
schedules by, and a container runs from. Their defaults live here and nowhere else.

Typed msgspec `Struct`s. On the wire (inside APP_PUBLISH / APP_DEPLOY, and the container's hello reply)
each is a msgpack map of the fields that differ from their defaults (`to_wire`); a reader turns such a
map back with `definition_from_wire` / `settings_from_wire`, which fills in the defaults and rejects a
malformed one with `ValidationError` naming the field. Data only: no I/O. On msgspec, or on the contract's
pure-Python stand-in where msgspec cannot load (a container on another Python version).

Seconds are typed `float` (a reader may send either) with `int` defaults: the SDK's validated options are
whole seconds, and a value equal to its default is left off the wire whatever its type.
"""

from __future__ import annotations

import functools
from typing import Any

from ._msgspec import Struct, convert, defaults_of, structs

DEFAULT_TIMEOUT = 300  # seconds an input may run (Modal's default `timeout=`)
DEFAULT_SCALEDOWN_WINDOW = 60  # seconds an idle container stays


class Batch(Struct):
    """`@modal.batched`: up to `max_batch_size` inputs, gathered for at most `wait_ms`, run as one call."""

    max_batch_size: int
    wait_ms: int


class FunctionDefinition(Struct, omit_defaults=True):
    """What a container needs to find and run the user's code (sent to the runtime at hello)."""

    tag: str
    module_name: str
    qualname: str = ""
    module_file: str | None = None
    # The app's own file as it was when the app started or was deployed: its containers run that code
    # even after the file is edited (or removed), as Modal runs what it mounted at deploy time.
    module_source: bytes | None = None
    serialized: bytes | None = None  # cloudpickled target (`serialized=True`, or no importable module)
    is_generator: bool = False
    timeout: float = DEFAULT_TIMEOUT
    startup_timeout: float | None = None  # None: `timeout` (see `startup_limit`)
    snapshot: bool = False  # `enable_memory_snapshot`
    region: list[str] | None = None  # where it may run (a cluster backend places it on one of these)
    gpu: list[str] | None = None  # "TYPE:COUNT", in order of preference; a backend that cannot give them refuses
    # The caller's own source (the module's directory, the working directory), never its packages.
    sys_path: list[str] = []
    cwd: str = ""
    max_inputs: int = 1  # inputs a container runs at once (`@modal.concurrent`), or a batch's size
    batch: Batch | None = None
    # Web endpoints by method name (None: the function itself), each its decorator's config.
    web: list[dict[str, Any]] | None = None
    params: dict[str, Any] = {}  # a class's parameter values
    params_via_init: bool = False
    image_id: str | None = None
    image_hash: str | None = None
    # Set by the control plane when it starts the function.
    app_id: str | None = None
    function_id: str | None = None
    variant_of: str | None = None  # a class variant: the function it was bound from
    mounts: list[list[str]] = []  # [host path, container path]
    cpu_limit: float | None = None
    memory_limit_mib: int | None = None

    @property
    def startup_limit(self) -> float:
        """Seconds a container may take to start (import, enter hooks): `startup_timeout`, else `timeout`."""
        return self.startup_timeout or self.timeout


class PoolSettings(Struct, omit_defaults=True):
    """How a function's containers scale and what they get: the pool's config as the SDK publishes it."""

    min_containers: int = 0
    max_containers: int | None = None
    buffer_containers: int = 0
    scaledown_window: float = DEFAULT_SCALEDOWN_WINDOW
    gpu: list[str] | None = None  # "TYPE:COUNT", in order of preference
    max_inputs: int = 1
    target_inputs: int | None = None
    cpu: float | None = None  # requested cores (admission)
    cpu_limit: float | None = None  # enforced by the kernel
    memory_mib: int | None = None
    memory_limit_mib: int | None = None
    schedule: dict[str, Any] | None = None  # `Period.to_dict()` / `Cron.to_dict()`
    env: dict[str, str] = {}  # local secrets and `env=`
    secret_refs: list[dict[str, Any]] = []  # named secrets, resolved at start
    volumes: list[dict[str, Any]] | None = None  # resolved when the app runs (ephemeral ones get their name then)
    retries: dict[str, Any] | None = None  # `Retries.to_dict()`
    # A class without parameter values: only the variants bound with values start containers.
    unbound: bool = False


def to_wire(value: FunctionDefinition | PoolSettings) -> dict[str, Any]:
    """The map that travels: the fields that differ from their defaults. (msgspec's own `omit_defaults`
    compares most values by identity, so an equal number made elsewhere, `timeout=300`, would travel.)"""
    defaults = _defaults(type(value))
    return {name: _plain(v) for name, v in structs.asdict(value).items()
            if name not in defaults or v != defaults[name]}


@functools.cache
def _defaults(cls: type) -> dict[str, Any]:
    """`defaults_of(cls)`, worked out once per class (only compared with, never changed): msgspec
    evaluates the class's string annotations each time it is asked (~2 ms a class), which made
    publishing an app of ten functions cost ~20 ms of a cold start."""
    return defaults_of(cls)


def _plain(value: Any) -> Any:
    if isinstance(value, Struct):
        return structs.asdict(value)
    return value


def definition_from_wire(raw: dict[str, Any]) -> FunctionDefinition:
    return convert(raw, FunctionDefinition)


def settings_from_wire(raw: dict[str, Any]) -> PoolSettings:
    return convert(raw, PoolSettings)
