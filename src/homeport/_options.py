"""Validation of the keyword arguments of `@app.function(...)` and `@app.cls(...)`.

`function_options` turns the raw keyword arguments into a frozen `FunctionOptions`, raising with
Modal's messages; `unsupported_features` lists the options whose effect Homeport does not build yet,
and `merged_env` gives the environment variables a container gets from secrets and `env=`.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from ._image import Image
from ._option_values import (  # GPU_TYPES and parse_gpu_config re-exported: part of this module's API
    GPU_TYPES,
    check_bool,
    check_int,
    check_seconds,
    is_int,
    needs_arguments,
    parse_cpu,
    parse_gpu_config,
    parse_memory,
    parse_region,
    parse_retries,
    parse_volumes,
)
from ._retries import Retries
from ._schedule import Cron, Period
from ._secret import Secret, check_object_name
from ._volume import Volume
from .exception import DeprecationError, InvalidError

__all__ = [
    "GPU_TYPES",
    "FunctionOptions",
    "function_options",
    "merged_env",
    "parse_gpu_config",
    "unsupported_features",
]

_MAX_TIMEOUT = 86400


@dataclass(frozen=True)
class FunctionOptions:
    """The validated options of one function or class. Build it with `function_options(...)`."""

    image: Image | None = None
    secrets: tuple[Secret, ...] = ()
    env: dict[str, str] | None = None
    volumes: dict[str, Volume] = field(default_factory=dict)
    gpu: tuple[str, ...] | None = None  # "TYPE:COUNT", in order of preference
    cpu: tuple[float, float | None] | None = None  # (request, limit)
    memory: tuple[int, int | None] | None = None  # MiB: (request, limit)
    ephemeral_disk: int | None = None  # MiB
    timeout: int = 300
    startup_timeout: int | None = None
    retries: Retries | None = None
    schedule: Period | Cron | None = None
    region: tuple[str, ...] | None = None
    cloud: str | None = None
    min_containers: int = 0
    max_containers: int | None = None
    buffer_containers: int = 0
    scaledown_window: int = 60
    name: str | None = None
    serialized: bool = False
    enable_memory_snapshot: bool = False
    single_use_containers: bool = False
    block_network: bool = False
    max_inputs: int | None = None
    allow_concurrent_inputs: int | None = None  # legacy form of `@modal.concurrent(max_inputs=...)`
    nonpreemptible: bool = False
    include_source: bool | None = None
    # Modal parameters that are accepted here but whose effect is not built: the app refuses to run
    # with them (see `unsupported_features`), but a module using them still imports (for `.local()`).
    not_built: tuple[str, ...] = ()


# Modal parameters whose effect Homeport does not build, with why and what to do: accepted (and their
# type checked) when decorating, refused with this sentence when the app runs.
_NOT_BUILT_PARAMS = {
    "network_file_systems": "NetworkFileSystem is deprecated in Modal and not built; use `volumes=` instead",
    "proxy": "static-IP proxies are not built; remove it",
    "routing_region": "regional input routing is not built; remove it",
    "restrict_modal_access": "restricting a container's access to the platform is not built; remove it",
    "i6pn": "private IPv6 networking between containers is not built; remove it",
    "experimental_options": "experimental options are not built; remove it",
    "_experimental_restrict_output": "restricted output formats are not built; remove it",
}
# Legacy names that still work, with their modern replacement.
_RENAMED = {
    "keep_warm": "min_containers",
    "concurrency_limit": "max_containers",
    "container_idle_timeout": "scaledown_window",
}
_FIELD_NAMES = frozenset(f.name for f in fields(FunctionOptions))
_ACCEPTED = _FIELD_NAMES | set(_NOT_BUILT_PARAMS) | set(_RENAMED)
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _warn_deprecated(message: str) -> None:
    # Point the warning at the user's decorator line, however deep inside homeport we are.
    level, frame = 2, sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    warnings.warn(message, DeprecationError, stacklevel=level)


# --- function_options -----------------------------------------------------------------------------


def _apply_renamed(kwargs: dict[str, Any]) -> None:
    """Turn `keep_warm` / `concurrency_limit` / `container_idle_timeout` into their modern names."""
    for old, new in _RENAMED.items():
        value = kwargs.pop(old, None)
        if value is None:
            continue
        if kwargs.get(new) is not None:
            raise InvalidError(
                f"Cannot set both `{old}` and `{new}`; `{old}` is deprecated, so keep only `{new}`."
            )
        if old == "container_idle_timeout":
            check_seconds(old, value, 2, 1200)
        elif old == "concurrency_limit":
            check_int(old, value, minimum=1)
        else:
            check_int(old, value)
        _warn_deprecated(f"`{old}` is deprecated; use `{new}` instead.")
        kwargs[new] = value


def function_options(
    *,
    tag: str,
    raw_f: Callable[..., Any] | None = None,
    is_generator: bool = False,
    is_web: bool = False,
    **kwargs: Any,
) -> FunctionOptions:
    """Validate the keyword arguments of `@app.function` / `@app.cls` for the function named `tag`.

    ```python
    opts = function_options(tag="f", raw_f=f, timeout=60, retries=3)
    assert opts.retries == Retries(max_retries=3, backoff_coefficient=1.0, initial_delay=1.0)
    ```
    """
    for key in kwargs:
        if key not in _ACCEPTED:
            raise TypeError(f"Function '{tag}' got an unexpected keyword argument '{key}'")
    kwargs = dict(kwargs)

    not_built = _not_built_params(kwargs)
    allow_concurrent_inputs = kwargs.pop("allow_concurrent_inputs", None)
    if allow_concurrent_inputs is not None:
        if not is_int(allow_concurrent_inputs) or allow_concurrent_inputs < 1:
            raise InvalidError("`allow_concurrent_inputs` must be a positive integer.")
        _warn_deprecated(
            "The 'allow_concurrent_inputs' parameter is deprecated. Use the '@modal.concurrent' decorator "
            f"instead: `@modal.concurrent(max_inputs={allow_concurrent_inputs})`."
        )
    _apply_renamed(kwargs)

    image = kwargs.get("image")
    if image is not None and not isinstance(image, Image):
        raise InvalidError(f"Expected modal.Image object. Got {type(image)}.")

    secrets = kwargs.get("secrets") or ()
    if not isinstance(secrets, (list, tuple)) or not all(isinstance(s, Secret) for s in secrets):
        raise InvalidError("`secrets=` has to be a list or tuple of `modal.Secret` objects")

    env = kwargs.get("env")
    if env is not None:
        env = Secret.from_dict(env).local_values

    if "timeout" in kwargs and kwargs["timeout"] is None:
        raise InvalidError(
            "The `timeout` parameter cannot be set to None: https://modal.com/docs/guide/timeouts"
        )
    timeout = check_seconds("timeout", kwargs.get("timeout", 300), 1, _MAX_TIMEOUT)
    startup_timeout = kwargs.get("startup_timeout")
    if startup_timeout is not None:
        startup_timeout = check_seconds("startup_timeout", startup_timeout, 1, _MAX_TIMEOUT)

    retries = parse_retries(kwargs.get("retries"), tag)
    if kwargs.get("retries"):
        if is_generator:
            raise InvalidError("Generator Functions do not support retries.")
        if is_web:
            raise InvalidError("Web Functions do not support retries.")

    schedule = kwargs.get("schedule")
    if schedule is not None:
        if not isinstance(schedule, (Period, Cron)):
            raise InvalidError(
                f"`schedule` must be a modal.Period or modal.Cron, not {type(schedule).__name__}"
            )
        if raw_f is not None and needs_arguments(raw_f):
            raise InvalidError(
                f"Function {raw_f} has a schedule, so it needs to support being called with no arguments"
            )

    min_containers = check_int("min_containers", _default(kwargs, "min_containers", 0))
    max_containers = kwargs.get("max_containers")
    if max_containers is not None:
        max_containers = check_int("max_containers", max_containers, minimum=1)
        if min_containers > max_containers:
            raise InvalidError(
                f"`min_containers` ({min_containers}) cannot be greater than `max_containers` ({max_containers})"
            )
    buffer_containers = check_int("buffer_containers", _default(kwargs, "buffer_containers", 0))
    scaledown_window = _default(kwargs, "scaledown_window", 60)
    if not is_int(scaledown_window):
        raise InvalidError(
            f"`scaledown_window` must be an int (seconds), not {type(scaledown_window).__name__}"
        )
    if not 2 <= scaledown_window <= 3600:
        raise InvalidError("`scaledown_window` must be between 2 and 3600 (inclusive)")

    ephemeral_disk = kwargs.get("ephemeral_disk")
    if ephemeral_disk is not None:
        ephemeral_disk = check_int("ephemeral_disk", ephemeral_disk, minimum=1)

    name = kwargs.get("name")
    if name is not None:
        if not isinstance(name, str):
            raise InvalidError("Invalid value for `name`: Must be string.")
        check_object_name(name, "Function")
    cloud = kwargs.get("cloud")
    if cloud is not None and not isinstance(cloud, str):
        raise InvalidError(f"`cloud` must be a string like 'aws' or 'gcp', not {type(cloud).__name__}")
    include_source = kwargs.get("include_source")
    if include_source is not None:
        include_source = check_bool("include_source", include_source)

    single_use = check_bool("single_use_containers", _default(kwargs, "single_use_containers", False))
    max_inputs = kwargs.get("max_inputs")
    if max_inputs is not None:
        if not is_int(max_inputs):
            raise InvalidError(f"`max_inputs` must be an int, not {type(max_inputs).__name__}")
        if max_inputs <= 0:
            raise InvalidError("`max_inputs` must be positive")
        if max_inputs != 1:
            raise InvalidError("Only `max_inputs=1` is currently supported")
        _warn_deprecated("`max_inputs=1` is deprecated; use `single_use_containers=True` instead.")
        single_use = True

    return FunctionOptions(
        image=image,
        secrets=tuple(secrets),
        env=env,
        volumes=parse_volumes(kwargs.get("volumes")),
        gpu=parse_gpu_config(kwargs.get("gpu")),
        cpu=parse_cpu(kwargs.get("cpu")),
        memory=parse_memory(kwargs.get("memory")),
        ephemeral_disk=ephemeral_disk,
        timeout=timeout,
        startup_timeout=startup_timeout,
        retries=retries,
        schedule=schedule,
        region=parse_region(kwargs.get("region")),
        cloud=cloud,
        min_containers=min_containers,
        max_containers=max_containers,
        buffer_containers=buffer_containers,
        scaledown_window=scaledown_window,
        name=name,
        serialized=check_bool("serialized", _default(kwargs, "serialized", False)),
        enable_memory_snapshot=check_bool(
            "enable_memory_snapshot", _default(kwargs, "enable_memory_snapshot", False)
        ),
        single_use_containers=single_use,
        block_network=check_bool("block_network", _default(kwargs, "block_network", False)),
        max_inputs=max_inputs,
        allow_concurrent_inputs=allow_concurrent_inputs,
        nonpreemptible=check_bool("nonpreemptible", _default(kwargs, "nonpreemptible", False)),
        include_source=include_source,
        not_built=not_built,
    )


# The type each not-built parameter takes in Modal (None is always its default).
_NOT_BUILT_TYPES: dict[str, tuple[type, ...]] = {
    "network_file_systems": (Mapping,),
    "routing_region": (str,),
    "restrict_modal_access": (bool,),
    "i6pn": (bool,),
    "experimental_options": (Mapping,),
    "_experimental_restrict_output": (bool,),
}


def _not_built_params(kwargs: dict[str, Any]) -> tuple[str, ...]:
    """The not-built parameters given a value other than their default, checked for type."""
    given = []
    for key in _NOT_BUILT_PARAMS:
        value = kwargs.pop(key, None)
        if value is None:
            continue
        types = _NOT_BUILT_TYPES.get(key)  # `proxy` takes a `modal.Proxy`, which Homeport has not
        if types is not None and not isinstance(value, types):
            expected = " or ".join("a dict" if t is Mapping else t.__name__ for t in types)
            raise InvalidError(f"`{key}` must be {expected}, not {type(value).__name__}")
        if value is False or (isinstance(value, Mapping) and not value):
            continue  # the default, spelled out
        given.append(key)
        if key == "experimental_options" and str(value.get("enable_gpu_snapshot", "")).lower() in ("true", "1"):
            given.append(_GPU_SNAPSHOT)  # Modal's alpha GPU snapshots: named in the refusal
    return tuple(given)


_GPU_SNAPSHOT = "experimental_options.enable_gpu_snapshot"


def _default(kwargs: dict[str, Any], key: str, default: Any) -> Any:
    # Modal's decorators default most of these to None, so None means "not set".
    value = kwargs.get(key)
    return default if value is None else value


# --- what is not built, and the environment -------------------------------------------------------


def _not_built(param: str, why: str, what_to_do: str) -> str:
    return f"`{param}` is not supported by Homeport yet ({why}); {what_to_do}."


def unsupported_features(options: FunctionOptions) -> list[str]:
    """One sentence per option whose effect Homeport does not build yet, saying what to do instead."""
    out: list[str] = [f"`{key}=` is not supported by Homeport yet ({_NOT_BUILT_PARAMS[key]})." for key in options.not_built
                      if key in _NOT_BUILT_PARAMS]
    if _GPU_SNAPSHOT in options.not_built:
        out.append(_not_built("experimental_options={'enable_gpu_snapshot': True}",
                              "GPU memory snapshots are not built, and a snapshot never silently drops GPU state",
                              "remove it; with `enable_memory_snapshot=True` put GPU work in an `@modal.enter()` "
                              "hook without `snap=True`"))
    if options.ephemeral_disk:
        out.append(_not_built("ephemeral_disk=...", "disk quotas are not built", "remove it"))
    if options.cloud:
        out.append(
            _not_built(
                "cloud=...", "placement by cloud provider is not built", "remove it to run on this machine"
            )
        )
    if options.image is not None:
        out.extend(_image_problems(options.image))
    if options.block_network:
        out.append(_not_built("block_network=True", "network isolation is not built", "remove it"))
    if options.nonpreemptible:
        out.append(_not_built("nonpreemptible=True", "preemption classes are not built", "remove it"))
    if options.single_use_containers or options.max_inputs is not None:
        param = "max_inputs=1" if options.max_inputs is not None else "single_use_containers=True"
        out.append(
            _not_built(
                param,
                "containers that exit after one input are not built",
                "remove it; containers serve many inputs",
            )
        )
    return out


def _image_problems(image: Image) -> list[str]:
    # Build steps and Python versions are built by the control plane's image builder, which reports
    # what this machine cannot build (apt_install, run_commands) when the image is built.
    if image.base.kind == "from_registry":
        return [
            _not_built(
                f"image=Image.from_registry({image.base.get('tag')!r})",
                "registry images are not built",
                "use Image.debian_slim() with the packages the function needs",
            )
        ]
    return []


def volume_refs(options: FunctionOptions) -> list[dict[str, Any]]:
    """The volumes a function mounts, by name and path (ephemeral ones once their block created them)."""
    out = []
    for path, vol in options.volumes.items():
        if vol.name is None:
            raise InvalidError(f"The ephemeral volume for {path} is used outside its `with modal.Volume.ephemeral()` block.")
        out.append({"path": path, "name": vol.name, "create_if_missing": vol.create_if_missing})
    return out


def secret_refs(options: FunctionOptions) -> list[dict[str, Any]]:
    """Named secrets (`Secret.from_name`), resolved by the control plane when the app starts."""
    return [{"name": s.name, "required_keys": list(s.required_keys)} for s in options.secrets if not s.is_local]


def merged_env(options: FunctionOptions) -> dict[str, str]:
    """The variables from local secrets, then `env=`; a later source wins on a shared key."""
    env: dict[str, str] = {}
    for secret in options.secrets:
        values = secret.local_values
        if values is not None:
            env.update(values)
    env.update(options.env or {})
    return env
