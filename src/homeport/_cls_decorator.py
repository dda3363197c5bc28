"""`@app.cls(...)`, `@app.server(...)` and `@app.function()` on a class: the class body checked and the
class registered with its app as a `Cls` (or a `Function` for the function-level form)."""

from __future__ import annotations

import inspect
from typing import Any

from . import _protocol as P
from ._cls import Cls, Server
from ._cls_body import _ClassInfo, _finalize_class, _local_instance
from ._definition import (
    Registered,
    Registry,
    batch_definition,
    definition_of,
    input_settings,
    pool_config,
    web_definition,
)
from ._function import Function
from ._options import FunctionOptions, function_options
from ._partial import PartialFunction
from .exception import InvalidError


def _check_class(user_cls: type, info: _ClassInfo, options: FunctionOptions, where: str) -> None:
    if info.web and info.params:
        raise InvalidError(
            f"{where} has web endpoints ({', '.join(info.web)}) and `modal.parameter()`s: a web request cannot "
            "choose parameter values. Remove the parameters, or serve the endpoints from a class without them."
        )
    if info.web and options.retries is not None:
        raise InvalidError("Web Functions do not support retries.")
    snap = [name for name, (kind, is_snap) in info.hooks.items() if kind == "enter" and is_snap]
    if snap and not options.enable_memory_snapshot:
        raise InvalidError(
            f"A class must have `enable_memory_snapshot=True` to use `snap=True` on its methods "
            f"({where}: {', '.join(snap)})."
        )


def _check_class_kwargs(kwargs: dict[str, Any], user_cls: type) -> None:
    if "<locals>" in user_cls.__qualname__ and not kwargs.get("serialized"):
        raise InvalidError(
            "The `@app.cls` decorator must apply to classes in global scope, unless `serialized=True` is "
            f"set (class {user_cls.__name__} is defined inside a function, where a container cannot import it)."
        )
    if kwargs.get("schedule") is not None:
        raise InvalidError(
            f"`schedule=` cannot be used with `@app.cls` (class {user_cls.__name__}): a schedule calls a "
            "function with no arguments. Put the schedule on an `@app.function()` that calls the class's method."
        )
    if kwargs.get("is_generator") is not None:
        raise InvalidError(
            f"`is_generator=` cannot be used with `@app.cls` (class {user_cls.__name__}); generator methods "
            "are detected per method, or marked with `@modal.method(is_generator=True)`."
        )


def cls_decorator(app: Registry, kwargs: dict[str, Any], server: dict[str, Any] | None = None):
    """`@app.cls(...)`; with `server` (`{"type": "server", "port": ...}`), the seed's
    `@app._experimental_server(port=...)`: a class whose enter hooks start an HTTP server on the port."""

    def decorator(user_cls: Any) -> Cls:
        if isinstance(user_cls, PartialFunction):
            raise InvalidError("Cannot stack `@modal.enter`/`@modal.exit`/`@modal.method` on top of `@app.cls()`. "
                               "Hint: swap the order of the decorators.")
        if not inspect.isclass(user_cls):
            raise InvalidError(f"`@app.cls` must decorate a class, got {type(user_cls).__name__}")
        where = f"Class {user_cls.__name__}"
        _check_class_kwargs(kwargs, user_cls)
        tag = kwargs.get("name") or user_cls.__name__
        options = function_options(tag=tag, raw_f=None, **kwargs)
        info = _finalize_class(user_cls, where)
        _check_class(user_cls, info, options, where)
        if server is not None:
            _check_server_class(user_cls, info)
        if not info.methods and not info.web and not server and not _has_call(user_cls):
            raise InvalidError(
                f"Class {user_cls.__name__} has no `@modal.method()`, web endpoint or `__call__`, so it has "
                "nothing to call. Mark the methods to call remotely with `@modal.method()`."
            )
        cls = (Server if server else Cls)(app, user_cls, tag, options, info.methods, info.params)
        cls._web_methods = {None: server} if server else {name: web for name, web in info.web.items()}
        inputs = input_settings(user_cls, options, _class_batch(user_cls, info.methods))
        if info.web and inputs["batch"] is not None:
            raise InvalidError(f"{where} has a `@modal.batched` method and web endpoints; serve them from another class.")
        defaults = cls._default_params
        definition = definition_of(tag, user_cls, user_cls.__qualname__, options, False, params=defaults or {},
                                      max_inputs=inputs["max_inputs"], batch=batch_definition(inputs["batch"]),
                                      web=web_definition(cls._web_methods))
        config = pool_config(options, inputs["max_inputs"], inputs["target_inputs"])
        if defaults is None:
            # No values to run the enter hooks with: only the variants bound with values start containers,
            # each keeping `min_containers` warm for its parameter set.
            config.unbound = True
        app._register(Registered(tag, cls, options, definition, config, cls._hydrate))
        return cls

    return decorator


def _check_server_class(user_cls: type, info: _ClassInfo) -> None:
    name = user_cls.__name__
    if not any(kind == "enter" for kind, _snap in info.hooks.values()):
        raise InvalidError(
            f"Server class {name} must have an @modal.enter() to setup the server: the enter hook starts the "
            "HTTP server (for example with `subprocess.Popen`) on the port given to the decorator."
        )
    if info.methods:
        raise InvalidError(
            f"Server class {name} cannot have `@modal.method()` decorated functions. Servers only expose HTTP endpoints."
        )
    if info.web:
        raise InvalidError(f"Server class {name} cannot have web endpoint methods ({', '.join(info.web)}); "
                           "its server answers every request.")
    if info.params:
        raise InvalidError(f"Server class {name} cannot use modal.parameter(). Servers do not support parameterization.")


def _class_batch(user_cls: type, methods: dict[str, dict]) -> dict[str, int] | None:
    batched = [name for name, m in methods.items() if m.get("batched")]
    if not batched:
        return None
    if len(batched) > 1:
        raise InvalidError(f"Modal class {user_cls.__name__} can only have one batched function.")
    if len(methods) > 1:
        raise InvalidError(f"Modal class {user_cls.__name__} with a modal batched function cannot have other modal methods.")
    return methods[batched[0]]["batched"]


def _has_call(user_cls: type) -> bool:
    return any("__call__" in vars(k) for k in user_cls.__mro__ if k is not object)


def function_class(app: Registry, user_cls: type, kwargs: dict[str, Any]) -> Function:
    """The seed's function-level class form: `@app.function()` on a class with `__call__` and hooks."""
    if not _has_call(user_cls):
        raise InvalidError(
            "The `@app.function` decorator cannot be used on a class without `__call__`. "
            "Please use `@app.cls` instead."
        )
    where = f"Class {user_cls.__name__}"
    if "<locals>" in user_cls.__qualname__ and not kwargs.get("serialized"):
        raise InvalidError(
            "The `@app.function` decorator must apply to classes in global scope, unless `serialized=True` is "
            f"set (class {user_cls.__name__} is defined inside a function, where a container cannot import it)."
        )
    tag = kwargs.get("name") or user_cls.__qualname__
    kwargs = dict(kwargs)
    is_gen = kwargs.pop("is_generator", None)
    if is_gen is None:
        call = user_cls.__call__
        is_gen = inspect.isgeneratorfunction(call) or inspect.isasyncgenfunction(call)
    options = function_options(tag=tag, raw_f=None, is_generator=bool(is_gen), **kwargs)
    info = _finalize_class(user_cls, where)
    _check_class(user_cls, info, options, where)
    if info.web:
        raise InvalidError(
            f"{where} has web endpoint methods ({', '.join(info.web)}), which need `@app.cls()`; "
            "`@app.function()` on a class serves only its `__call__`."
        )
    if info.params:
        raise InvalidError(
            f"{where} declares `modal.parameter()`s, which need `@app.cls()`: with `@app.function()` the "
            "class is created without arguments."
        )
    instance_for_local: list[Any] = []

    def local_call(*args: Any, **kw: Any) -> Any:
        if not instance_for_local:
            instance_for_local.append(_local_instance(user_cls, {}))
        return instance_for_local[0](*args, **kw)

    fn = Function(app, local_call, tag, options, is_generator=bool(is_gen))
    setattr(fn, P.USER_CLASS_ATTR, user_cls)
    inputs = input_settings(user_cls, options)
    definition = definition_of(tag, user_cls, user_cls.__qualname__, options, bool(is_gen), params={},
                                  max_inputs=inputs["max_inputs"], batch=None)
    config = pool_config(options, inputs["max_inputs"], inputs["target_inputs"])
    app._register(Registered(tag, fn, options, definition, config, fn._hydrate))
    return fn

