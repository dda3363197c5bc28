"""Building what an app publishes of each function and class: its definition (how a container finds and
runs the user's code) and its pool settings (how its containers scale), from the validated options.

`@app.function` (`_app`) and `@app.cls` (`_cls`) both build through here; the types and their defaults
are the contract's (`_protocol.definition`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import cloudpickle

from . import _context
from . import _protocol as P
from ._image_request import code_dirs
from ._options import FunctionOptions, merged_env, secret_refs
from ._protocol.definition import Batch, FunctionDefinition, PoolSettings
from .exception import InvalidError, UnimplementedError


class Registered:
    """A function or class of an app, as it will be published to the control plane.

    `definition`: built, or (in a container, `definition_of`) built when first asked for: a container
    that imports the app's module publishes nothing, unless its code runs or deploys the app itself."""

    def __init__(self, tag: str, obj: Any, options: FunctionOptions,
                 definition: FunctionDefinition | Callable[[], FunctionDefinition],
                 config: PoolSettings, hydrate: Callable[..., None]) -> None:
        self.tag, self.obj, self.options = tag, obj, options
        self._definition, self.config, self.hydrate = definition, config, hydrate

    @property
    def definition(self) -> FunctionDefinition:
        d = self._definition
        if not isinstance(d, FunctionDefinition):
            d = self._definition = d()
        return d


class Registry(Protocol):
    """Where `@app.function` / `@app.cls` register what they built: an `App`."""

    def _register(self, reg: Registered) -> None: ...


def _module_location(obj: Any) -> tuple[str, str | None]:
    module_name = getattr(obj, "__module__", None) or "__main__"
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    if module_name == "__main__" and path and module is not None:
        # Containers import this script as `P.SCRIPT_MODULE`, so the exceptions and values they send
        # back refer to classes by that name: here it must resolve to this very script, so that
        # `except MyError:` and `isinstance(result, MyClass)` hold in the caller.
        sys.modules.setdefault(P.SCRIPT_MODULE, module)
    return module_name, os.path.abspath(path) if path else None


def _read_source(path: str | None) -> bytes | None:
    try:
        with open(path, "rb") as f:  # type: ignore[arg-type]
            return f.read()
    except (OSError, TypeError):
        return None


def definition_of(
    tag: str, target: Any, qualname: str, options: FunctionOptions, is_generator: bool, **extra: Any
) -> FunctionDefinition | Callable[[], FunctionDefinition]:
    """`build_definition`'s result; in a container, a thunk that builds it when first asked for (the
    working directory is the one of now). Importing the module there needs none of it (3 ms for 10
    functions: their source, code directories, pickled forms): the client published them already."""
    if not _context.runtime_process:
        return build_definition(tag, target, qualname, options, is_generator, **extra)
    cwd = os.getcwd()
    return lambda: build_definition(tag, target, qualname, options, is_generator, cwd=cwd, **extra)


def build_definition(
    tag: str, target: Any, qualname: str, options: FunctionOptions, is_generator: bool, *,
    cwd: str | None = None, **extra: Any
) -> FunctionDefinition:
    """What a container needs to find and run the user's code (sent to the runtime at hello).
    `cwd`: the working directory it was made in (default: now)."""
    cwd = os.getcwd() if cwd is None else cwd
    module_name, module_file = _module_location(target)
    serialized = None
    if options.serialized or module_file is None:
        serialized = cloudpickle.dumps(target)
    return FunctionDefinition(
        tag=tag,
        module_name=module_name,
        module_file=module_file,
        module_source=_read_source(module_file) if serialized is None else None,
        qualname=qualname,
        serialized=serialized,
        is_generator=is_generator,
        timeout=options.timeout,
        startup_timeout=options.startup_timeout,  # None: as `timeout` (`startup_limit`)
        snapshot=options.enable_memory_snapshot,
        region=list(options.region) if options.region else None,
        gpu=list(options.gpu) if options.gpu else None,
        sys_path=code_dirs(module_name, module_file, cwd),
        cwd=cwd,
        **extra,
    )


def input_settings(target: Any, options: FunctionOptions, batch: dict[str, int] | None = None) -> dict[str, Any]:
    """How many inputs a container takes at once: `@modal.concurrent` (or the legacy
    `allow_concurrent_inputs`) on the function or class, or a `@modal.batched` batch."""
    conc = getattr(target, P.CONCURRENT_ATTR, None)
    if conc is None and options.allow_concurrent_inputs:
        conc = {"max_inputs": options.allow_concurrent_inputs, "target_inputs": None}
    if batch is not None:
        if conc is not None and conc["max_inputs"] > 1:
            raise UnimplementedError(
                "`@modal.batched` together with `@modal.concurrent` is not supported by Homeport yet; "
                "batches run one at a time per container. Remove one of the two decorators."
            )
        return {"max_inputs": batch["max_batch_size"], "target_inputs": None, "batch": batch}
    conc = conc or {"max_inputs": 1, "target_inputs": None}
    return {"max_inputs": conc["max_inputs"], "target_inputs": conc["target_inputs"], "batch": None}


def batch_definition(batch: dict[str, int] | None) -> Batch | None:
    return Batch(batch["max_batch_size"], batch["wait_ms"]) if batch is not None else None


def web_definition(endpoints: Mapping[str | None, dict[str, Any] | None]) -> list[dict[str, Any]] | None:
    """The web endpoints a container serves, by method name (None: the function itself); None if none.

    A function or class has either endpoints the gateway reaches over the container's own HTTP server
    (`fastapi_endpoint`, `asgi_app`, `wsgi_app`, any number of them) or one user server on a port
    (`web_server`, or a server class).
    """
    out = [{"name": name, **config} for name, config in endpoints.items() if config is not None]
    if not out:
        return None
    proxied = [e for e in out if e["type"] in P.WEB_PROXIED]
    if proxied and len(out) > 1:
        names = ", ".join(e["name"] or "?" for e in out)
        raise InvalidError(
            f"A class with a `@modal.web_server` method cannot serve other web endpoints too ({names}): a "
            "container forwards its requests to that one server. Put the others on another class."
        )
    return out


def resource_config(options: FunctionOptions) -> dict[str, Any]:
    """Requests (admission) and limits (enforced by the kernel) from `cpu=` and `memory=`."""
    out: dict[str, Any] = {}
    if options.cpu is not None:
        out["cpu"], out["cpu_limit"] = options.cpu
    if options.memory is not None:
        out["memory_mib"], out["memory_limit_mib"] = options.memory
    return out


def pool_config(options: FunctionOptions, max_inputs: int = 1, target_inputs: int | None = None) -> PoolSettings:
    return PoolSettings(
        min_containers=options.min_containers,
        max_containers=options.max_containers,
        buffer_containers=options.buffer_containers,
        scaledown_window=options.scaledown_window,
        gpu=list(options.gpu) if options.gpu else None,
        max_inputs=max_inputs,
        target_inputs=target_inputs,
        **resource_config(options),
        schedule=options.schedule.to_dict() if options.schedule is not None else None,
        env=merged_env(options),
        secret_refs=secret_refs(options),
        retries=options.retries.to_dict() if options.retries is not None else None,
    )
