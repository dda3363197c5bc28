"""Checks of single option values of `@app.function(...)` and `@app.cls(...)`: ints, seconds, GPUs, CPU,
memory, volumes, regions and retries. Each raises with Modal's message; `_options` puts them together."""

from __future__ import annotations

import inspect
import math
import posixpath
from collections.abc import Callable, Mapping
from pathlib import PurePath
from typing import Any

from ._retries import Retries
from ._volume import Volume
from .exception import InvalidError

GPU_TYPES = (
    "T4",
    "L4",
    "A10",
    "A10G",
    "L40S",
    "A100",
    "A100-40GB",
    "A100-80GB",
    "RTX-PRO-6000",
    "H100",
    "H100!",
    "H200",
    "B200",
    "B200+",
    "ANY",
)
_MAX_GPUS = 8
_MAX_GPUS_BY_TYPE = {"A10": 4, "A10G": 4}


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(name: str, value: Any, *, minimum: int = 0) -> int:
    if not is_int(value):
        raise InvalidError(f"`{name}` must be an int, not {type(value).__name__}")
    if value < minimum:
        qualifier = "non-negative" if minimum == 0 else f"at least {minimum}"
        raise InvalidError(f"`{name}` must be {qualifier}, got {value}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidError(f"`{name}` must be True or False, not {value!r}")
    return value


def check_seconds(name: str, value: Any, low: int, high: int, unit: str = " seconds") -> int:
    if not is_int(value):
        raise InvalidError(f"`{name}` must be an int (seconds), not {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidError(f"`{name}` must be between {low} and {high}{unit}, got {value}")
    return value


def parse_gpu_config(gpu: Any) -> tuple[str, ...] | None:
    """`"a100:2"` → `("A100:2",)`; a list is a fallback list in order of preference."""
    if gpu is None:
        return None
    if isinstance(gpu, (list, tuple)):
        if not gpu:
            raise InvalidError(
                "`gpu=` fallback list is empty; give at least one GPU type, e.g. gpu=['H100', 'A100']"
            )
        return tuple(_parse_one_gpu(g) for g in gpu)
    return (_parse_one_gpu(gpu),)


def _parse_one_gpu(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidError(f"Invalid GPU config: {value!r}. Value must be a string like 'T4' or 'A100:2'.")
    gpu_type, count = value, 1
    if ":" in value:
        gpu_type, count_str = value.split(":", 1)
        try:
            count = int(count_str)
        except ValueError:
            raise InvalidError(f"Invalid GPU count: {count_str}. Value must be an integer.") from None
    gpu_type = gpu_type.strip().upper()
    if gpu_type not in GPU_TYPES:
        raise InvalidError(f"Invalid GPU type: {gpu_type!r}. Valid types are: {', '.join(GPU_TYPES)}.")
    limit = _MAX_GPUS_BY_TYPE.get(gpu_type, _MAX_GPUS)
    if not 1 <= count <= limit:
        raise InvalidError(
            f"Invalid GPU count: {count}. {gpu_type} supports 1 to {limit} GPUs per container."
        )
    return f"{gpu_type}:{count}"


def parse_cpu(cpu: Any) -> tuple[float, float | None] | None:
    if cpu is None:
        return None
    if isinstance(cpu, (tuple, list)):
        if len(cpu) != 2 or not all(_is_number(c) for c in cpu):
            raise InvalidError(f"`cpu` must be a number or a (request, limit) tuple of numbers, got {cpu!r}")
        request, limit = cpu
        _finite_cpu(cpu)
        if request <= 0:
            raise InvalidError("CPU request must be a positive number")
        if limit <= 0:
            raise InvalidError("CPU limit must be a positive number")
        if limit < request:
            raise InvalidError(f"Cannot specify a CPU limit lower than request: {limit} < {request}")
        return (float(request), float(limit))
    if not _is_number(cpu):
        raise InvalidError(f"`cpu` must be a number or a (request, limit) tuple of numbers, got {cpu!r}")
    _finite_cpu(cpu)
    if cpu <= 0:
        raise InvalidError("CPU request must be a positive number")
    return (float(cpu), None)


def _finite_cpu(cpu: Any) -> None:
    values = cpu if isinstance(cpu, (tuple, list)) else (cpu,)
    if not all(math.isfinite(c) for c in values):
        raise InvalidError(f"`cpu` must be a finite number of cores (e.g. cpu=2 or cpu=(1, 4)), got {cpu!r}")


def parse_memory(memory: Any) -> tuple[int, int | None] | None:
    if memory is None:
        return None
    if isinstance(memory, (tuple, list)):
        if len(memory) != 2 or not all(is_int(m) for m in memory):
            raise InvalidError(
                f"`memory` must be an int (MiB) or a (request, limit) tuple of ints, got {memory!r}"
            )
        request, limit = memory
        if request <= 0:
            raise InvalidError("Memory request must be a positive integer (MiB)")
        if limit < request:
            raise InvalidError(f"Cannot specify a memory limit lower than request: {limit} < {request}")
        return (request, limit)
    if not is_int(memory):
        raise InvalidError(
            f"`memory` must be an int (MiB) or a (request, limit) tuple of ints, got {memory!r}"
        )
    if memory <= 0:
        raise InvalidError("Memory request must be a positive integer (MiB)")
    return (memory, None)


def parse_volumes(volumes: Any) -> dict[str, Volume]:
    if volumes is None:
        return {}
    if not isinstance(volumes, Mapping):
        raise InvalidError("volumes must be a dict[str, Volume] where the keys are paths")
    out: dict[str, Volume] = {}
    for raw_path, volume in volumes.items():
        if not isinstance(raw_path, (str, PurePath)):
            raise InvalidError(f"Volume mount path must be a string, not {type(raw_path).__name__}")
        path = PurePath(raw_path).as_posix()
        if not posixpath.isabs(path) or posixpath.normpath(path) != path:
            raise InvalidError(f"Volume {path} must be a canonical, absolute path.")
        if path == "/":
            raise InvalidError(f"Volume {path} cannot be mounted into root directory.")
        if path in ("/root", "/tmp"):
            raise InvalidError(f"Volume {path} cannot be mounted at '{path}'.")
        if not isinstance(volume, Volume):
            raise InvalidError(
                f"Object of type {type(volume)} mounted at '{path}' is not usable as a volume."
            )
        out[path] = volume
    paths = list(out)
    for i, path in enumerate(paths):
        same = [p for p in paths[i:] if out[p].same_volume(out[path])]
        if len(same) > 1:
            raise InvalidError(
                "The same Volume cannot be mounted in multiple locations for the same function: "
                + ", ".join(same)
            )
    return out


def parse_region(region: Any) -> tuple[str, ...] | None:
    if region is None:
        return None
    regions = (region,) if isinstance(region, str) else region
    if (
        not isinstance(regions, (list, tuple))
        or not regions
        or not all(isinstance(r, str) and r for r in regions)
    ):
        raise InvalidError(f"`region` must be a region name or a list of region names, got {region!r}")
    return tuple(regions)


def needs_arguments(fn: Callable[..., Any]) -> bool:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return any(p.default is p.empty and p.kind not in variadic for p in signature.parameters.values())


def parse_retries(retries: Any, tag: str) -> Retries | None:
    if retries is None or isinstance(retries, Retries):
        return retries
    if is_int(retries):
        return Retries(max_retries=retries, initial_delay=1.0, backoff_coefficient=1.0)
    raise InvalidError(
        "Retries parameter must be an integer or instance of modal.Retries. "
        f"Found: {type(retries)} on Function '{tag}'."
    )
