"""Variants of a class (`with_options`, `with_concurrency`, `with_batching`): the arguments checked where the
user wrote them, and the (pool config, definition) overrides that `FunctionBind` sends for them."""

from __future__ import annotations

from typing import Any

from ._definition import resource_config
from ._options import (
    FunctionOptions,
    function_options,
    merged_env,
    secret_refs,
    unsupported_features,
    volume_refs,
)
from ._partial import batch_settings, concurrency_settings
from .exception import InvalidError, UnimplementedError


def check_with_options(tag: str, options: dict[str, Any]) -> dict[str, Any]:
    """`with_options(...)` keyword arguments, validated where the user wrote them; legacy names renamed."""
    unknown = set(options) - _WITH_OPTIONS
    if unknown:
        raise TypeError(f"with_options() got unexpected keyword arguments: {', '.join(sorted(unknown))}")
    given = {k: v for k, v in options.items() if v is not None}
    if isinstance(given.get("gpu"), (list, tuple)):  # as in Modal: a fallback list is the decorator's
        raise InvalidError("`with_options(gpu=...)` takes one GPU type string like 'A100' or 'H100:2', not a "
                           "list; give a fallback list to the class decorator instead")
    function_options(tag=tag, raw_f=None, **given)
    return {_LEGACY.get(k, k): v for k, v in given.items()}


def variant_payload(tag: str, base: FunctionOptions | None, over: dict[str, Any], inputs: dict[str, Any] | None,
                    startup_follows_timeout: bool) -> tuple[dict, dict]:
    """The (pool config, definition) overrides of a class variant, as `FUNCTION_BIND` sends them.

    `base`: the class's own options when they are known here (a local class); for a deployed class the
    control plane already holds them (its environment and secrets stay, these add to them).
    """
    config: dict[str, Any] = {}
    definition: dict[str, Any] = {}
    if over:
        opts = function_options(tag=tag, raw_f=None, **{**({"timeout": base.timeout} if base else {}), **over})
        problems = unsupported_features(opts)
        if problems:
            raise UnimplementedError(
                f"{tag}.with_options(...) uses parameters Homeport does not build yet: " + "; ".join(problems)
            )
        for key in _POOL_KEYS:
            if key in over:
                config[key] = getattr(opts, key)
        if "gpu" in over:
            config["gpu"] = list(opts.gpu or ())
        if "secrets" in over or "env" in over:
            config["env"] = {**(merged_env(base) if base else {}), **merged_env(opts)}
            refs = (secret_refs(base) if base else []) + secret_refs(opts)
            if refs:
                config["secret_refs"] = refs
        if "retries" in over:
            config["retries"] = opts.retries.to_dict() if opts.retries else None
        if "timeout" in over:
            definition["timeout"] = opts.timeout
            if startup_follows_timeout:  # the start-up limit follows `timeout` unless set
                definition["startup_timeout"] = opts.timeout
        if "startup_timeout" in over:
            definition["startup_timeout"] = opts.startup_timeout
        if "region" in over:
            definition["region"] = list(opts.region) if opts.region else None
        if "volumes" in over:
            config["volumes"] = volume_refs(opts)
        if "cpu" in over or "memory" in over:
            config.update(resource_config(opts))
    if inputs:
        config.update(max_inputs=inputs["max_inputs"], target_inputs=inputs["target_inputs"])
        definition.update(max_inputs=inputs["max_inputs"], batch=inputs["batch"])
    return config, definition


def concurrency_inputs(max_inputs: int, target_inputs: int | None) -> dict[str, Any]:
    settings = concurrency_settings(max_inputs, target_inputs)
    return {"max_inputs": settings["max_inputs"], "target_inputs": settings["target_inputs"], "batch": None}


def batching_inputs(max_batch_size: int, wait_ms: int) -> dict[str, Any]:
    return {"max_inputs": max_batch_size, "target_inputs": None, "batch": batch_settings(max_batch_size, wait_ms)}


# Keyword arguments of `Cls.with_options`; legacy names are renamed (with a deprecation warning).
_WITH_OPTIONS = {"cpu", "memory", "gpu", "env", "secrets", "volumes", "retries", "timeout", "startup_timeout",
                 "min_containers", "max_containers", "buffer_containers", "scaledown_window", "region", "cloud",
                 "routing_region", "keep_warm", "concurrency_limit", "container_idle_timeout",
                 "allow_concurrent_inputs"}
_LEGACY = {"keep_warm": "min_containers", "concurrency_limit": "max_containers",
           "container_idle_timeout": "scaledown_window"}
_POOL_KEYS = ("min_containers", "max_containers", "buffer_containers", "scaledown_window")


def _concurrency_on_batched() -> UnimplementedError:
    return UnimplementedError("`with_concurrency` on a class with a `@modal.batched` method is not supported by Homeport yet.")


def _batching_without_batched(tag: str) -> InvalidError:
    return InvalidError(f"`with_batching` needs a `@modal.batched` method on {tag}.")

