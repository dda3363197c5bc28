"""`Cls` (what `@app.cls()` gives), its instances (`Obj`) and their methods: each method is a `Function`
bound to the instance's parameter values, called remotely in the containers of that variant.

The parts live beside it: the class body read (`_cls_body`), the decorator (`_cls_decorator`), variants'
overrides (`_cls_variants`) and classes of deployed apps (`_cls_deployed`).
"""

from __future__ import annotations

import json
from typing import Any

from . import _protocol as P
from ._bridge import run_sync
from ._client import get_client
from ._cls_body import (  # re-exported: `_Parameter`s are pickled with a class sent by value
    _NO_DEFAULT,
    _local_instance,
    _Parameter,
    default_values,
    ordered_hooks,
    parameter,
)
from ._cls_deployed import (  # re-exported: pickled by reference under this module's name by earlier versions
    _DeployedCls,
    _DeployedMethod,
    _DeployedObj,
    _DeployedServer,
    _DeployedWebMethod,
)
from ._cls_variants import (
    _batching_without_batched,
    _concurrency_on_batched,
    batching_inputs,
    check_with_options,
    concurrency_inputs,
    variant_payload,
)
from ._cls_web import WebMethodBase
from ._definition import Registry
from ._function import Function, check_not_importing, in_container, lookup_in_own_app
from .exception import ExecutionError, InvalidError

__all__ = [
    "Cls",
    "Obj",
    "Server",
    "_DeployedCls",
    "_DeployedMethod",
    "_DeployedObj",
    "_DeployedServer",
    "_DeployedWebMethod",
    "_Parameter",
    "ordered_hooks",
    "parameter",
]


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

    def __init__(self, app: Registry | None, user_cls: type, tag: str, options: Any, methods: dict[str, dict],
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
        fid = await client.request(P.FunctionBind(fid=root._function_id, params=params, config=config,
                                                   definition=definition))
        root._bound[key] = fid
        return fid

    def _not_hydrated(self) -> Exception:
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


class _WebMethod(WebMethodBase):
    """A web endpoint method of a class: served over HTTP at its URL, or run here with `.local()`."""

    def __init__(self, obj: Obj, name: str) -> None:
        self._obj, self._name = obj, name

    @property
    def _qualname(self) -> str:
        return f"{self._obj._cls._tag}.{self._name}"

    @property
    def web_url(self) -> str | None:
        return (self._obj._cls._base or self._obj._cls)._web_urls.get(self._name)

    def local(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._obj._local_instance(), self._name)(*args, **kwargs)


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

