"""`@app.cls`, `modal.parameter` and `Cls`: classes whose lifecycle hooks run once per container."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from . import _protocol as P
from ._bridge import run_sync
from ._client import get_client
from ._function import Function
from ._options import function_options, merged_env, unsupported_features
from ._partial import PartialFunction
from .exception import InvalidError, NotFoundError, UnimplementedError

if TYPE_CHECKING:
    from ._app import App

_NO_DEFAULT = object()
_PARAM_TYPES = (str, int, bool, bytes)


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


def _finalize_class(user_cls: type, where: str) -> tuple[dict[str, dict], dict[str, tuple[type, Any]], bool]:
    """Put raw functions (with runtime markers) back on the class; return its methods and parameters."""
    methods: dict[str, dict] = {}
    has_enter = False
    for name, attr in list(vars(user_cls).items()):
        if isinstance(attr, PartialFunction):
            setattr(user_cls, name, attr.finalize())
            if attr.method is not None:
                methods[name] = attr.method
            has_enter = has_enter or bool(attr.lifecycle and attr.lifecycle[0] == "enter")
    annotations = inspect.get_annotations(user_cls, eval_str=False)
    params: dict[str, tuple[type, Any]] = {}
    for name, attr in list(vars(user_cls).items()):
        if isinstance(attr, _Parameter):
            ann = annotations.get(name)
            typ = ann if isinstance(ann, type) else {"str": str, "int": int, "bool": bool, "bytes": bytes}.get(str(ann))
            if typ not in _PARAM_TYPES:
                raise InvalidError(
                    f"{where} parameter `{name}` must be annotated as str, int, bool or bytes, got {ann!r}"
                )
            params[name] = (typ, attr.default)
    return methods, params, has_enter


def cls_decorator(app: App, kwargs: dict[str, Any]):
    def decorator(user_cls: Any) -> Cls:
        if isinstance(user_cls, PartialFunction):
            raise InvalidError("Cannot stack `@modal.enter`/`@modal.exit`/`@modal.method` on top of `@app.cls()`. "
                               "Hint: swap the order of the decorators.")
        if not inspect.isclass(user_cls):
            raise InvalidError(f"`@app.cls` must decorate a class, got {type(user_cls).__name__}")
        tag = kwargs.get("name") or user_cls.__name__
        methods, params, _ = _finalize_class(user_cls, f"Class {user_cls.__name__}")
        if not methods and "__call__" not in vars(user_cls):
            raise InvalidError(
                f"Class {user_cls.__name__} has no `@modal.method()`, web endpoint or `__call__`, so it has "
                "nothing to call. Mark the methods to call remotely with `@modal.method()`."
            )
        options = function_options(tag=tag, raw_f=None, **kwargs)
        cls = Cls(app, user_cls, tag, options, methods, params)
        from ._app import _Registered, build_definition, input_settings, pool_config

        inputs = input_settings(user_cls, options, _class_batch(user_cls, methods))
        definition = build_definition(tag, user_cls, user_cls.__qualname__, options, False, params={},
                                      max_inputs=inputs["max_inputs"], batch=inputs["batch"])
        config = pool_config(options, inputs["max_inputs"], inputs["target_inputs"])
        app._register(_Registered(tag, cls, options, definition, config, cls._hydrate))
        return cls

    return decorator


def _class_batch(user_cls: type, methods: dict[str, dict]) -> dict[str, int] | None:
    batched = [name for name, m in methods.items() if m.get("batched")]
    if not batched:
        return None
    if len(batched) > 1:
        raise InvalidError(f"Modal class {user_cls.__name__} can only have one batched function.")
    if len(methods) > 1:
        raise InvalidError(f"Modal class {user_cls.__name__} with a modal batched function cannot have other modal methods.")
    return methods[batched[0]]["batched"]


def function_class(app: App, user_cls: type, kwargs: dict[str, Any]) -> Function:
    """The seed's function-level class form: `@app.function()` on a class with `__call__` and hooks."""
    if "__call__" not in vars(user_cls):
        raise InvalidError(
            "The `@app.function` decorator cannot be used on a class without `__call__`. "
            "Please use `@app.cls` instead."
        )
    _finalize_class(user_cls, f"Class {user_cls.__name__}")
    tag = kwargs.get("name") or user_cls.__qualname__
    options = function_options(tag=tag, raw_f=None, **kwargs)
    instance_for_local: list[Any] = []

    def local_call(*args: Any, **kw: Any) -> Any:
        if not instance_for_local:
            instance_for_local.append(_local_instance(user_cls, {}))
        return instance_for_local[0](*args, **kw)

    fn = Function(app, local_call, tag, options, is_generator=False)
    setattr(fn, P.USER_CLASS_ATTR, user_cls)
    from ._app import _Registered, build_definition, input_settings, pool_config

    inputs = input_settings(user_cls, options)
    definition = build_definition(tag, user_cls, user_cls.__qualname__, options, False, params={},
                                  max_inputs=inputs["max_inputs"], batch=None)
    config = pool_config(options, inputs["max_inputs"], inputs["target_inputs"])
    app._register(_Registered(tag, fn, options, definition, config, fn._hydrate))
    return fn


def _local_instance(user_cls: type, params: dict[str, Any]) -> Any:
    """An instance for `.local()`: parameters set and enter hooks run, as in a container."""
    obj = user_cls.__new__(user_cls)
    for k, v in params.items():
        setattr(obj, k, v)
    if "__init__" in vars(user_cls):
        obj.__init__()
    hooks = []
    for name in dir(user_cls):
        raw = inspect.getattr_static(user_cls, name, None)
        lc = getattr(raw, P.LIFECYCLE_ATTR, None)
        if lc and lc[0] == "enter":
            hooks.append((not lc[1], raw.__code__.co_firstlineno, name))
    for _, _, name in sorted(hooks):
        getattr(obj, name)()
    return obj


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
                 params: dict[str, tuple[type, Any]], overrides: dict[str, Any] | None = None,
                 base: Cls | None = None) -> None:
        self._app = app
        self._user_cls = user_cls
        self._tag = tag
        self._options = options
        self._methods = methods
        self._params = params
        self._overrides = overrides or {}
        self._base = base
        self._function_id: str | None = None
        self._bound: dict[tuple, str] = {}
        self._input_overrides: dict[str, Any] | None = None
        setattr(self, P.USER_CLASS_ATTR, user_cls)

    def __repr__(self) -> str:
        return f"Cls({self._tag!r})"

    def _hydrate(self, function_id: str | None) -> None:
        self._function_id = function_id
        self._bound.clear()

    def __call__(self, *args: Any, **kwargs: Any) -> Obj:
        if args:
            raise InvalidError(
                f"Positional arguments are not allowed for {self._tag}; pass parameters by name, "
                f"e.g. {self._tag}({', '.join(f'{p}=...' for p in self._params) or ''})"
            )
        values: dict[str, Any] = {}
        for name, value in kwargs.items():
            if name not in self._params:
                raise InvalidError(
                    f"{self._tag} has no parameter `{name}`; declare it as `{name}: str = modal.parameter()`."
                )
            typ = self._params[name][0]
            if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
                raise TypeError(f"Parameter `{name}` of {self._tag} must be {typ.__name__}, got {type(value).__name__}")
            values[name] = value
        for name, (_, default) in self._params.items():
            if name not in values:
                if default is _NO_DEFAULT:
                    raise InvalidError(f"Missing required parameter `{name}` for {self._tag}.")
                values[name] = default
        return Obj(self, values)

    def with_options(self, **options: Any) -> Cls:
        """A variant of the class with other resources or scaling; it gets its own containers."""
        allowed = {"cpu", "memory", "gpu", "secrets", "volumes", "timeout", "retries", "scaledown_window",
                   "min_containers", "max_containers", "buffer_containers", "container_idle_timeout", "region",
                   "startup_timeout", "env"}
        unknown = set(options) - allowed
        if unknown:
            raise TypeError(f"with_options() got unexpected keyword arguments: {', '.join(sorted(unknown))}")
        merged = {**self._overrides, **{k: v for k, v in options.items() if v is not None}}
        function_options(tag=self._tag, raw_f=None, **merged)  # validate now, where the user wrote it
        root = self._base or self
        variant = Cls(self._app, self._user_cls, self._tag, self._options, self._methods, self._params, merged, root)
        variant._input_overrides = self._input_overrides
        return variant

    def with_concurrency(self, *, max_inputs: int, target_inputs: int | None = None) -> Cls:
        """A variant whose containers each run up to `max_inputs` inputs at once."""
        from ._partial import concurrency_settings

        settings = concurrency_settings(max_inputs, target_inputs)
        if self._batch_settings() is not None:
            raise UnimplementedError("`with_concurrency` on a class with a `@modal.batched` method is not supported by Homeport yet.")
        return self._with_inputs({"max_inputs": settings["max_inputs"], "target_inputs": settings["target_inputs"],
                                  "batch": None})

    def with_batching(self, *, max_batch_size: int, wait_ms: int) -> Cls:
        """A variant of a class with a `@modal.batched` method, with other batch settings."""
        from ._partial import batch_settings

        settings = batch_settings(max_batch_size, wait_ms)
        if self._batch_settings() is None:
            raise InvalidError(f"`with_batching` needs a `@modal.batched` method on {self._tag}.")
        return self._with_inputs({"max_inputs": max_batch_size, "target_inputs": None, "batch": settings})

    def _batch_settings(self) -> dict[str, int] | None:
        return next((m["batched"] for m in self._methods.values() if m.get("batched")), None)

    def _with_inputs(self, inputs: dict[str, Any]) -> Cls:
        root = self._base or self
        variant = Cls(self._app, self._user_cls, self._tag, self._options, self._methods, self._params,
                      dict(self._overrides), root)
        variant._input_overrides = inputs
        return variant

    @classmethod
    def from_name(cls, app_name: str, name: str, **kwargs: Any) -> Cls:
        raise NotFoundError(
            f"Cannot look up class '{name}' of app '{app_name}': deployed apps are not supported by Homeport yet "
            "(`homeport deploy` is not built). Use the class from its defining module inside `app.run()`."
        )

    async def _bind(self, params: dict[str, Any]) -> str:
        root = self._base or self
        if root._function_id is None:
            raise root._not_hydrated()
        inputs = self._input_overrides
        if not params and not self._overrides and not inputs:
            return root._function_id
        key = (tuple(sorted(params.items())), tuple(sorted((k, repr(v)) for k, v in self._overrides.items())),
               repr(inputs))
        fid = root._bound.get(key)
        if fid is not None:
            return fid
        overrides = {}
        if self._overrides:
            base_kwargs = {k: getattr(self._options, k) for k in ("timeout",)}
            opts = function_options(tag=self._tag, raw_f=None, **{**base_kwargs, **self._overrides})
            problems = unsupported_features(opts)
            if problems:
                raise UnimplementedError("with_options uses parameters Homeport does not build yet: " + "; ".join(problems))
            overrides = {k: v for k, v in self._overrides.items()}
            config = {
                "min_containers": opts.min_containers,
                "max_containers": opts.max_containers,
                "buffer_containers": opts.buffer_containers,
                "scaledown_window": opts.scaledown_window,
                "env": {**merged_env(self._options), **merged_env(opts)},
                "retries": opts.retries.to_dict() if opts.retries else None,
            }
            config = {k: v for k, v in config.items() if k in overrides or k == "env" or
                      (k == "scaledown_window" and "container_idle_timeout" in overrides)}
            if "cpu" in overrides or "memory" in overrides:
                from ._app import resource_config

                config.update(resource_config(opts))
            definition = {"timeout": opts.timeout} if "timeout" in overrides else {}
            if "startup_timeout" in overrides:
                definition["startup_timeout"] = opts.startup_timeout
        else:
            config, definition = {}, {}
        if inputs:
            config.update(max_inputs=inputs["max_inputs"], target_inputs=inputs["target_inputs"])
            definition.update(max_inputs=inputs["max_inputs"], batch=inputs["batch"])
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
        return getattr(self._obj._local_instance(), self._method)(*args, **kwargs)

    async def _resolve_fid(self) -> str:
        return await self._obj._cls._bind(self._obj._params)

    def _require_hydrated(self) -> str:
        return run_sync(self._resolve_fid())
