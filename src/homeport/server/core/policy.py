"""Control-plane policy that needs no I/O: when a failed input runs again, which function variant a
request names, which input ids are web requests, and a pool's settings from a function's config.

The services (`server.calls`, `server.functions`, `server.executor`) ask these and act on the answers;
unit tests check them with plain values.
"""

from __future__ import annotations

import itertools
from typing import Any

from ... import _protocol as P
from ..._backoff import retry_delay
from .gpus import parse_request as parse_gpu_request
from .scheduler import PoolConfig


# --- retries --------------------------------------------------------------------------------------
def retry_after(policy: dict[str, Any] | None, kind: str, attempt: int) -> float | None:
    """Seconds until a failed input runs again as attempt `attempt + 1`, or None when it does not: no
    `retries=` policy, a generator call (its items were already streamed), or the retries are used up."""
    if not policy or kind == P.KIND_GENERATOR or attempt >= policy["max_retries"]:
        return None
    return retry_delay(policy, attempt + 1)


# --- class variants -------------------------------------------------------------------------------
def canonical(value: Any) -> Any:
    """Dicts as key-sorted pairs, recursively: one encoding per value, whatever the insertion order."""
    if isinstance(value, dict):
        return [[k, canonical(v)] for k, v in sorted(value.items())]
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value


def variant_key(base_function_id: str, request: dict[str, Any]) -> tuple[str, bytes]:
    """The key of a variant (a class with parameter values, or `with_options` overrides) of a function:
    the same values give the same variant however the client ordered them."""
    return base_function_id, P.encode(canonical({"p": request.get("params") or {}, "c": request.get("config") or {},
                                                 "d": request.get("definition") or {}}))


# --- input ids ------------------------------------------------------------------------------------
class InputIds:
    """The ids of everything the scheduler queues: function inputs and web requests share its queues,
    and which of the two an id is is a property of the id itself (function inputs are odd, web
    requests even), never inferred from which table happens to hold it."""

    def __init__(self) -> None:
        self._next = itertools.count(1)

    def function_input(self) -> int:
        return 2 * next(self._next) - 1

    def web_request(self) -> int:
        return 2 * next(self._next)

    @staticmethod
    def is_web(input_id: int) -> bool:
        return input_id % 2 == 0


# --- pools ----------------------------------------------------------------------------------------
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


def variant_pool_config(base: PoolConfig, overrides: dict[str, Any], definition: dict[str, Any]) -> PoolConfig:
    """A variant's pool: the base pool's settings with the request's overrides. A variant has values for
    the class's parameters: it may start containers (and keeps the class's `min_containers` warm for this
    parameter set) even when the base pool cannot."""
    deadlines = pool_config({}, definition)
    return PoolConfig(**{**base.__dict__, **overrides, "unbound": False, "timeout": deadlines.timeout,
                         "startup_timeout": deadlines.startup_timeout, "batch_wait": deadlines.batch_wait})
