"""`@app.cls`, `modal.parameter` and `Cls`: classes whose lifecycle hooks run once per container."""

from __future__ import annotations

import inspect
import json
import sys
from typing import TYPE_CHECKING, Any

from . import _protocol as P
from ._bridge import run_sync
from ._client import get_client
from ._function import Function, webhook_call_error
from ._options import FunctionOptions, function_options, merged_env, unsupported_features
from ._partial import PartialFunction
from .exception import InvalidError, UnimplementedError

if TYPE_CHECKING:
    from ._app import App

_NO_DEFAULT = object()
_PARAM_TYPES = (str, int, bool, bytes)
_TYPE_NAMES = {"str": str, "int": int, "bool": bool, "bytes": bytes}


class _Parameter:
    def __init__(self, default: Any, init: bool) -> None:
        self.default = default
        self.init = init

    def __repr__(self) -> str:
        return "modal.parameter()" if self.default is _NO_DEFAULT else f"modal.parameter(default={self.default!r})"


def parameter(*, default: Any = _NO_DEFAULT, init: bool = True) -> Any:
    """Declare a class parameter: `tag: str = modal.parameter(default="a")`, passed as `Cls(tag="b")`."""
    if default is not _NO_DEFAULT and not isinstance(default, _PARAM_TYPES):
        raise InvalidError(
            f"`modal.parameter` default must be a str, int, bool or bytes, got {type(default).__name__}"
        )
    return _Parameter(default, init)


class _ClassInfo:
    """What `@app.cls` (or `@app.function` on a class) learnt from the class body."""

    def __init__(self) -> None:
        self.methods: dict[str, dict] = {}  # name -> {"is_generator": bool}
        self.hooks: dict[str, tuple[str, bool]] = {}  # name -> ("enter", snap) | ("exit", False)
        self.params: dict[str, tuple[type, Any, bool]] = {}  # name -> (type, default, init)
        self.web: dict[str, dict] = {}  # name -> web endpoint config


def _markers(attr: Any) -> tuple[dict | None, tuple | None]:
    raw = getattr(attr, "__func__", attr)
    if not inspect.isfunction(raw):
        return None, None
    return getattr(raw, P.METHOD_ATTR, None), getattr(raw, P.LIFECYCLE_ATTR, None)


def _finalize_class(user_cls: type[Any], where: str) -> _ClassInfo:
    """Put raw functions (with runtime markers) back on the class and its bases; say what it has.

    Walks the MRO from `object` down, like attribute lookup in reverse, so that methods and hooks
    inherited from a base class count and a subclass's plain override of a method removes it.
    """
    info = _ClassInfo()
    entries: dict[str, tuple[dict | None, tuple | None]] = {}
    for klass in reversed(user_cls.__mro__):
        if klass is object:
            continue
        for name, attr in list(vars(klass).items()):
            if isinstance(attr, PartialFunction):
                attr = attr.finalize()
                setattr(klass, name, attr)
            entries[name] = _markers(attr)
            web = getattr(getattr(attr, "__func__", attr), P.WEB_ATTR, None) if inspect.isfunction(attr) else None
            if web is not None:
                info.web[name] = web
            else:
                info.web.pop(name, None)  # a subclass's plain override is no endpoint
    for name, (method, lifecycle) in entries.items():
        if method is not None:
            info.methods[name] = method
        if lifecycle is not None:
            info.hooks[name] = lifecycle
    annotations: dict[str, Any] = {}
    for klass in reversed(user_cls.__mro__):
        annotations.update(inspect.get_annotations(klass, eval_str=False))
    for name in dir(user_cls):
        attr = inspect.getattr_static(user_cls, name, None)
        if isinstance(attr, _Parameter):
            if name not in annotations:
                raise InvalidError(
                    f"All modal.parameter() specifications need to be type-annotated: give {where} parameter "
                    f"`{name}` a type, e.g. `{name}: str = modal.parameter()`."
                )
            ann = annotations[name]
            typ = ann if isinstance(ann, type) else _TYPE_NAMES.get(str(ann))
            if typ not in _PARAM_TYPES:
                shown = ann if isinstance(ann, str) else getattr(ann, "__name__", repr(ann))
                raise InvalidError(
                    f"{where} parameter `{name}`: {shown} is not a supported modal.parameter() type. "
                    "Use one of: str, int, bool, bytes."
                )
            if attr.default is not _NO_DEFAULT and not _is_param_value(attr.default, typ):
                raise InvalidError(
                    f"{where} parameter `{name}` is annotated `{typ.__name__}`, but its default {attr.default!r} is "
                    f"{_a(type(attr.default).__name__)}. Give it {_a(typ.__name__)} default, e.g. "
                    f"`{name}: {typ.__name__} = modal.parameter(default={typ()!r})`, or change the annotation."
                )
            info.params[name] = (typ, attr.default, attr.init)
    init = user_cls.__init__
    if init is not object.__init__ and inspect.isfunction(init):
        required = [p.name for p in list(inspect.signature(init).parameters.values())[1:]
                    if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if required:
            raise InvalidError(
                f"{where} has an `__init__` that requires arguments ({', '.join(required)}), but containers "
                "create the instance themselves. Declare them as class parameters instead, e.g. "
                f"`{required[0]}: str = modal.parameter()`, and do set-up in a `@modal.enter()` method."
            )
    return info


def _a(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def _is_param_value(value: Any, typ: type) -> bool:
    # bool is an int subclass, but `n: int = modal.parameter(default=True)` is a mistake (as `Cls(n=True)` is).
    return isinstance(value, typ) and not (typ is int and isinstance(value, bool))


def default_values(params: dict[str, tuple[type, Any, bool]]) -> dict[str, Any] | None:
    """The parameter values of `Cls()` with no arguments, or None when the class has required parameters.

    A class whose parameters all have defaults has a default instance: its base pool runs with these
    values (and keeps its `min_containers` warm). One with required parameters cannot start a container
    before a caller gives the values.
    """
    if any(default is _NO_DEFAULT and init for _typ, default, init in params.values()):
        return None
    return {name: default for name, (_typ, default, _init) in params.items() if default is not _NO_DEFAULT}


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


def cls_decorator(app: App, kwargs: dict[str, Any], server: dict[str, Any] | None = None):
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
        from ._app import _Registered, build_definition, input_settings, pool_config, web_definition

        inputs = input_settings(user_cls, options, _class_batch(user_cls, info.methods))
        if info.web and inputs["batch"] is not None:
            raise InvalidError(f"{where} has a `@modal.batched` method and web endpoints; serve them from another class.")
        defaults = cls._default_params
        definition = build_definition(tag, user_cls, user_cls.__qualname__, options, False, params=defaults or {},
                                      max_inputs=inputs["max_inputs"], batch=inputs["batch"],
                                      web=web_definition(cls._web_methods))
        config = pool_config(options, inputs["max_inputs"], inputs["target_inputs"])
        if defaults is None:
            # No values to run the enter hooks with: only the variants bound with values start containers,
            # each keeping `min_containers` warm for its parameter set.
            config["unbound"] = True
        app._register(_Registered(tag, cls, options, definition, config, cls._hydrate))
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


def function_class(app: App, user_cls: type, kwargs: dict[str, Any]) -> Function:
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
    from ._app import _Registered, build_definition, input_settings, pool_config

    inputs = input_settings(user_cls, options)
    definition = build_definition(tag, user_cls, user_cls.__qualname__, options, bool(is_gen), params={},
                                  max_inputs=inputs["max_inputs"], batch=None)
    config = pool_config(options, inputs["max_inputs"], inputs["target_inputs"])
    app._register(_Registered(tag, fn, options, definition, config, fn._hydrate))
    return fn


def ordered_hooks(user_cls: type) -> tuple[list[str], list[str]]:
    """(enter hooks, exit hooks) by name, in the order a container runs them.

    Definition order, base classes first; `snap=True` enter hooks before the others. The container
    runtime keeps its own copy of this rule (it does not import the SDK).
    """
    order: dict[str, tuple | None] = {}
    for klass in reversed(user_cls.__mro__):
        for name, attr in vars(klass).items():
            order[name] = _markers(attr)[1]
    snap = [n for n, lc in order.items() if lc and lc[0] == "enter" and lc[1]]
    post = [n for n, lc in order.items() if lc and lc[0] == "enter" and not lc[1]]
    exits = [n for n, lc in order.items() if lc and lc[0] == "exit"]
    return snap + post, exits


def _local_instance(user_cls: type[Any], params: dict[str, Any]) -> Any:
    """An instance for `.local()`: parameters set and enter hooks run, as in a container."""
    obj = user_cls.__new__(user_cls)  # type: ignore[call-overload]  # mypy looks up type.__new__ here
    for k, v in params.items():
        setattr(obj, k, v)
    if user_cls.__init__ is not object.__init__:
        obj.__init__()
    for name in ordered_hooks(user_cls)[0]:
        getattr(obj, name)()
    return obj


def check_unregistered_classes(module_names: set[str]) -> None:
    """Raise if a module of the app holds a class with `@modal.method`/`@enter`/`@exit` methods that was
    never registered with `@app.cls()`: its methods could never be called remotely.

    (Decorators on methods run before the class exists, so this cannot be seen when they are applied.)
    """
    for module_name in sorted(module_names):
        module = sys.modules.get(module_name)
        if module is None:
            continue
        for value in list(vars(module).values()):
            if not inspect.isclass(value) or getattr(value, "__module__", None) != module_name:
                continue
            for name, attr in vars(value).items():
                if isinstance(attr, PartialFunction) and not attr.registered:
                    kind = f"`@modal.{attr.web['type']}`" if attr.web else "`@modal.method`/`@modal.enter`/`@modal.exit`"
                    raise InvalidError(
                        f"Class {value.__qualname__} has {kind} method "
                        f"`{name}` but is not registered with `@app.cls()`, so it can never run in a container. "
                        f"Add `@app.cls()` above `class {value.__name__}`."
                    )


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
            from ._options import secret_refs

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
            from ._options import volume_refs

            config["volumes"] = volume_refs(opts)
        if "cpu" in over or "memory" in over:
            from ._app import resource_config

            config.update(resource_config(opts))
    if inputs:
        config.update(max_inputs=inputs["max_inputs"], target_inputs=inputs["target_inputs"])
        definition.update(max_inputs=inputs["max_inputs"], batch=inputs["batch"])
    return config, definition


def concurrency_inputs(max_inputs: int, target_inputs: int | None) -> dict[str, Any]:
    from ._partial import concurrency_settings

    settings = concurrency_settings(max_inputs, target_inputs)
    return {"max_inputs": settings["max_inputs"], "target_inputs": settings["target_inputs"], "batch": None}


def batching_inputs(max_batch_size: int, wait_ms: int) -> dict[str, Any]:
    from ._partial import batch_settings

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


class Cls:
    """A class registered with `@app.cls()`. Call it with parameters to get an object.

    ```python
    @app.cls()
    class Model:
        size: int = modal.parameter(default=1)

        @modal.enter()
        def load(self):
            self.weights = [0] * self.size

        @modal.method()
        def predict(self, x):
            return x + len(self.weights)

    with app.run():
        assert Model(size=3).predict.remote(1) == 4
    ```
    """

    def __init__(self, app: App | None, user_cls: type, tag: str, options: Any, methods: dict[str, dict],
                 params: dict[str, tuple[type, Any, bool]], overrides: dict[str, Any] | None = None,
                 base: Cls | None = None) -> None:
        self._app = app
        self._user_cls = user_cls
        self._tag = tag
        self._options = options
        self._methods = methods
        self._params = params
        self._overrides = overrides or {}
        self._base = base
        self._default_params = default_values(params)
        self._function_id: str | None = None
        self._web_methods: dict[str | None, dict] = base._web_methods if base is not None else {}
        self._web_urls: dict[str | None, str] = {}
        self._bound: dict[tuple, str] = {}
        self._input_overrides: dict[str, Any] | None = None
        self._variant: tuple[dict, dict] | None = None
        setattr(self, P.USER_CLASS_ATTR, user_cls)

    def __repr__(self) -> str:
        return f"Cls({self._tag!r})"

    def __getattr__(self, name: str) -> Any:
        methods = self.__dict__.get("_methods")
        if methods is not None and name in methods:
            raise AttributeError(
                "You can't access methods on a Cls directly - Did you forget to instantiate the class first? "
                f"e.g. instead of {self._tag}.{name}.remote(), do {self._tag}().{name}.remote()"
            )
        raise AttributeError(f"'Cls' object has no attribute {name!r}")

    def _hydrate(self, function_id: str | None, web_urls: dict[str, str] | None = None) -> None:
        self._function_id = function_id
        self._bound.clear()
        urls = web_urls if function_id is not None else None
        self._web_urls = {name: urls[key] for name in self._web_methods
                          if urls and (key := self._tag if name is None else f"{self._tag}.{name}") in urls}

    def __call__(self, *args: Any, **kwargs: Any) -> Obj:
        if args:
            raise InvalidError(
                "Can't use positional arguments with modal.parameter-based synthetic constructors. Use "
                f"(<parameter_name>=value) keyword arguments when constructing classes instead, e.g. "
                f"{self._tag}({', '.join(f'{p}=...' for p in self._params)})"
            )
        for name in kwargs:
            if name not in self._params or not self._params[name][2]:
                raise InvalidError(
                    f"{self._tag} has no parameter `{name}`; declare it as `{name}: str = modal.parameter()`."
                )
        values: dict[str, Any] = {}
        for name, (typ, default, init) in self._params.items():  # declaration order, whatever the call's
            if name in kwargs:
                value = kwargs[name]
                if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
                    raise TypeError(
                        f"Parameter `{name}` of {self._tag} must be {typ.__name__}, got {type(value).__name__}"
                    )
                values[name] = value
            elif default is not _NO_DEFAULT:
                values[name] = default
            elif init:
                raise InvalidError(f"Missing required parameter `{name}` for {self._tag}.")
        return Obj(self, values)

    def with_options(self, **options: Any) -> Cls:
        """A variant of the class with other resources, secrets, timeouts or scaling; it gets its own
        containers. Later calls override earlier ones."""
        given = check_with_options(self._tag, options)
        merged = {**self._overrides, **given}
        root = self._base or self
        variant = Cls(self._app, self._user_cls, self._tag, self._options, self._methods, self._params, merged, root)
        variant._input_overrides = self._input_overrides
        return variant

    def with_concurrency(self, *, max_inputs: int, target_inputs: int | None = None) -> Cls:
        """A variant whose containers each run up to `max_inputs` inputs at once."""
        inputs = concurrency_inputs(max_inputs, target_inputs)
        if self._batch_settings() is not None:
            raise _concurrency_on_batched()
        return self._with_inputs(inputs)

    def with_batching(self, *, max_batch_size: int, wait_ms: int) -> Cls:
        """A variant of a class with a `@modal.batched` method, with other batch settings."""
        inputs = batching_inputs(max_batch_size, wait_ms)
        if self._batch_settings() is None:
            raise _batching_without_batched(self._tag)
        return self._with_inputs(inputs)

    def _batch_settings(self) -> dict[str, int] | None:
        return next((m["batched"] for m in self._methods.values() if m.get("batched")), None)

    def _with_inputs(self, inputs: dict[str, Any]) -> Cls:
        root = self._base or self
        variant = Cls(self._app, self._user_cls, self._tag, self._options, self._methods, self._params,
                      dict(self._overrides), root)
        variant._input_overrides = inputs
        return variant

    @staticmethod
    def from_name(app_name: str, name: str, *, environment_name: str | None = None, **kwargs: Any) -> Any:
        """A class of a deployed app, looked up by name on first use: `Cls.from_name("app", "Model")()`."""
        return _DeployedCls(app_name, name)

    def _variant_payload(self) -> tuple[dict, dict]:
        """What `with_options` changes: (pool config, definition) overrides, sent to the control plane."""
        if self._variant is None:
            self._variant = variant_payload(self._tag, self._options, self._overrides, self._input_overrides,
                                            startup_follows_timeout=self._options.startup_timeout is None)
        return self._variant

    async def _bind(self, params: dict[str, Any]) -> str:
        root = self._base or self
        if root._function_id is None:
            from ._function import check_not_importing, in_container, lookup_in_own_app

            check_not_importing(root._tag)
            if in_container():
                root._function_id = await lookup_in_own_app(root._tag)
            else:
                raise root._not_hydrated()
        inputs = self._input_overrides
        if params == root._default_params and not self._overrides and not inputs:
            return root._function_id  # the default instance: the base pool, warm if it has `min_containers`
        config, definition = self._variant_payload()
        # Keyed by the values sent, not by how the user spelt them: two `Secret.from_dict`s with the
        # same keys but different values are different variants.
        key = (tuple(params.items()), json.dumps([config, definition], sort_keys=True))
        fid = root._bound.get(key)
        if fid is not None:
            return fid
        client = await get_client()
        fid = await client.request({"t": P.FUNCTION_BIND, "fid": root._function_id, "params": params,
                                    "config": config, "definition": definition})
        root._bound[key] = fid
        return fid

    def _not_hydrated(self) -> Exception:
        from .exception import ExecutionError

        return ExecutionError(
            f"Class '{self._tag}' has not been hydrated, because the App it is defined on is not running. "
            "Use it inside `with app.run():` or run the program with `homeport run`."
        )


class Obj:
    """An instance of a `Cls` with its parameter values; its methods are called remotely."""

    def __init__(self, cls: Cls, params: dict[str, Any]) -> None:
        self._cls = cls
        self._params = params
        self._methods: dict[str, _BoundMethod] = {}
        self._local: Any = None

    def __repr__(self) -> str:
        return f"Obj({self._cls._tag}, {self._params})"

    def __getattr__(self, name: str) -> Any:
        cls = self.__dict__.get("_cls")
        if cls is None or name.startswith("__"):
            raise AttributeError(name)
        if name in cls._methods:
            m = self._methods.get(name)
            if m is None:
                m = self._methods[name] = _BoundMethod(self, name, cls._methods[name])
            return m
        if name in cls._web_methods:
            return _WebMethod(self, name)
        if name in self._params:
            return self._params[name]
        raise AttributeError(
            f"{cls._tag} has no method `{name}` marked with `@modal.method()`"
        )

    def _local_instance(self) -> Any:
        if self._local is None:
            self._local = _local_instance(self._cls._user_cls, self._params)
        return self._local


class _BoundMethod(Function):
    def __init__(self, obj: Obj, name: str, info: dict) -> None:
        cls = obj._cls
        raw = getattr(cls._user_cls, name)
        super().__init__(cls._app, raw, f"{cls._tag}.{name}", cls._options,
                         is_generator=bool(info.get("is_generator")), method=name)
        self._obj = obj

    def local(self, *args: Any, **kwargs: Any) -> Any:
        assert self._method is not None  # a bound method always names its method
        return getattr(self._obj._local_instance(), self._method)(*args, **kwargs)

    async def _resolve_fid(self) -> str:
        return await self._obj._cls._bind(self._obj._params)

    def _require_hydrated(self) -> str:
        return run_sync(self._resolve_fid())


class _WebMethod:
    """A web endpoint method of a class: served over HTTP at its URL, or run here with `.local()`."""

    def __init__(self, obj: Obj, name: str) -> None:
        self._obj, self._name = obj, name

    @property
    def _qualname(self) -> str:
        return f"{self._obj._cls._tag}.{self._name}"

    def __repr__(self) -> str:
        return f"WebMethod({self._qualname})"

    @property
    def web_url(self) -> str | None:
        return (self._obj._cls._base or self._obj._cls)._web_urls.get(self._name)

    def get_web_url(self) -> str | None:
        return self.web_url

    def local(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._obj._local_instance(), self._name)(*args, **kwargs)

    def __getattr__(self, how: str) -> Any:
        if how in ("remote", "map", "starmap", "spawn", "remote_gen", "for_each"):
            raise webhook_call_error(how, self._qualname, self.web_url)
        raise AttributeError(how)


class Server(Cls):
    """A class served over HTTP by the server its `@modal.enter()` hook starts (the seed's
    `@app._experimental_server(port=...)`). Requests to its URL reach that server in every container.
    """

    def get_url(self) -> str | None:
        return self._web_urls.get(None)

    @property
    def web_url(self) -> str | None:
        return self.get_url()

    def get_web_url(self) -> str | None:
        return self.get_url()

    @staticmethod
    def from_name(app_name: str, name: str, *, environment_name: str | None = None, **kwargs: Any) -> Any:
        """The `@app.server` class `name` of deployed app `app_name`; `.get_url()` looks it up."""
        return _DeployedServer(app_name, name)


class _DeployedServer:
    def __init__(self, app_name: str, name: str) -> None:
        self._app_name, self._name = app_name, name
        self._url: str | None = None

    def __repr__(self) -> str:
        return f"Server.from_name({self._app_name!r}, {self._name!r})"

    def hydrate(self) -> _DeployedServer:
        async def go() -> dict[str, Any]:
            client = await get_client()
            return await client.request({"t": P.FUNCTION_LOOKUP, "app": self._app_name, "name": self._name})

        found = run_sync(go())
        if not found.get("web"):
            raise InvalidError(f"'{self._name}' of app '{self._app_name}' is not a server.")
        self._url = found.get("web_url")
        return self

    def get_url(self) -> str | None:
        if self._url is None:
            self.hydrate()
        return self._url


class _DeployedCls:
    """`Cls.from_name(app, name)`: instances call the deployed class's methods; parameters are checked
    against what the deployment declared. `with_options`, `with_concurrency` and `with_batching` give
    variants, bound on the deployed class like a local class's."""

    def __init__(self, app_name: str, name: str, overrides: dict[str, Any] | None = None,
                 inputs: dict[str, Any] | None = None, root: _DeployedCls | None = None) -> None:
        self._app_name = app_name
        self._name = name
        self._overrides = overrides or {}
        self._inputs = inputs
        self._root = root or self
        self._found: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"Cls.from_name({self._app_name!r}, {self._name!r})"

    async def _lookup(self) -> dict[str, Any]:
        from ._function import check_not_importing

        check_not_importing(self._name)
        root = self._root
        if root._found is None:
            client = await get_client()
            root._found = await client.request({"t": P.FUNCTION_LOOKUP, "app": self._app_name, "name": self._name})
        return root._found

    def hydrate(self) -> _DeployedCls:
        run_sync(self._lookup())
        return self

    def __call__(self, **params: Any) -> _DeployedObj:
        return _DeployedObj(self, params)

    def with_options(self, **options: Any) -> _DeployedCls:
        """A variant of the deployed class with other resources, secrets, timeouts or scaling."""
        given = check_with_options(self._name, options)
        return _DeployedCls(self._app_name, self._name, {**self._overrides, **given}, self._inputs, self._root)

    def with_concurrency(self, *, max_inputs: int, target_inputs: int | None = None) -> _DeployedCls:
        """A variant whose containers each run up to `max_inputs` inputs at once."""
        return _DeployedCls(self._app_name, self._name, self._overrides,
                            concurrency_inputs(max_inputs, target_inputs), self._root)

    def with_batching(self, *, max_batch_size: int, wait_ms: int) -> _DeployedCls:
        """A variant of a class with a `@modal.batched` method, with other batch settings."""
        return _DeployedCls(self._app_name, self._name, self._overrides,
                            batching_inputs(max_batch_size, wait_ms), self._root)

    def _variant_payload(self, info: dict[str, Any]) -> tuple[dict, dict]:
        """Checked against what the deployment says (known only once looked up)."""
        batched = any(m.get("batched") for m in (info.get("methods") or {}).values())
        if self._inputs is not None and self._inputs["batch"] is None and batched:
            raise _concurrency_on_batched()
        if self._inputs is not None and self._inputs["batch"] is not None and not batched:
            raise _batching_without_batched(self._name)
        follows = not (info.get("options") or {}).get("startup_timeout_set", False)
        return variant_payload(self._name, None, self._overrides, self._inputs, startup_follows_timeout=follows)


class _DeployedObj:
    def __init__(self, cls: _DeployedCls, params: dict[str, Any]) -> None:
        self._cls = cls
        self._params = params
        self._methods: dict[str, Function | _DeployedWebMethod] = {}
        self._fid: str | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        m = self._methods.get(name)
        if m is None:
            # Which kind of method it is is the deployment's to say: looked up now (once per class).
            found = run_sync(self._cls._lookup())
            info = found.get("info") or {}
            if name in (info.get("web_methods") or ()):
                key = f"{found.get('tag') or self._cls._name}.{name}"
                m = _DeployedWebMethod(self, name, (found.get("web_urls") or {}).get(key))
            else:
                m = _DeployedMethod(self, name)
            self._methods[name] = m
        return m

    async def _resolve(self, method: str) -> tuple[str, bool]:
        found = await self._cls._lookup()
        info = found.get("info") or {}
        methods = info.get("methods") or {}
        if method not in methods:
            raise AttributeError(f"{self._cls._name} has no method `{method}` (it has: {', '.join(sorted(methods)) or 'none'})")
        if self._fid is None:
            declared = info.get("params") or {}
            unknown = set(self._params) - set(declared)
            if unknown:
                raise InvalidError(f"{self._cls._name} has no parameter {sorted(unknown)[0]!r}")
            values = {}
            for pname, spec in declared.items():
                if pname in self._params:
                    values[pname] = self._params[pname]
                elif spec.get("has_default"):
                    values[pname] = spec.get("default")
                else:
                    raise InvalidError(f"Missing required parameter `{pname}` for {self._cls._name}.")
            defaults: dict[str, Any] | None = {p: spec.get("default") for p, spec in declared.items()}
            if not all(spec.get("has_default") for spec in declared.values()):
                defaults = None
            config, definition = self._cls._variant_payload(info)
            if values == defaults and not config and not definition:
                self._fid = found["fid"]  # the default instance: the deployed class's own (warm) pool
            else:
                client = await get_client()
                self._fid = await client.request({"t": P.FUNCTION_BIND, "fid": found["fid"], "params": values,
                                                  "config": config, "definition": definition})
        return self._fid, bool(methods[method].get("is_generator"))


class _DeployedWebMethod(_WebMethod):
    """A web endpoint method of a deployed class: called over HTTP at its URL, never with `.remote()`."""

    def __init__(self, obj: _DeployedObj, name: str, url: str | None) -> None:
        self._obj, self._name, self._url = obj, name, url  # type: ignore[assignment]

    @property
    def _qualname(self) -> str:
        return f"{self._obj._cls._name}.{self._name}"

    @property
    def web_url(self) -> str | None:
        return self._url

    def local(self, *args: Any, **kwargs: Any) -> Any:
        from .exception import ExecutionError

        raise ExecutionError(
            f"{self._qualname} belongs to a deployed class, whose definition is not in this program: it cannot "
            "run locally. Call it over HTTP at its web url."
        )


class _DeployedMethod(Function):
    def __init__(self, obj: _DeployedObj, name: str) -> None:
        super().__init__(None, None, f"{obj._cls._name}.{name}", None, is_generator=False, method=name)
        self._obj = obj

    async def _resolve_fid(self) -> str:
        assert self._method is not None  # a deployed method always names its method
        fid, self._is_generator = await self._obj._resolve(self._method)
        return fid
