"""`Cls.from_name` and `Server.from_name`: classes of a deployed app, looked up by name on first use; their
instances call the deployed class's methods (checked against what the deployment declared)."""

from __future__ import annotations

from typing import Any

from . import _protocol as P
from ._bridge import run_sync
from ._client import get_client
from ._cls_variants import (
    _batching_without_batched,
    _concurrency_on_batched,
    batching_inputs,
    check_with_options,
    concurrency_inputs,
    variant_payload,
)
from ._cls_web import WebMethodBase
from ._function import Function, check_not_importing
from .exception import ExecutionError, InvalidError


class _DeployedServer:
    def __init__(self, app_name: str, name: str) -> None:
        self._app_name, self._name = app_name, name
        self._url: str | None = None

    def __repr__(self) -> str:
        return f"Server.from_name({self._app_name!r}, {self._name!r})"

    def hydrate(self) -> _DeployedServer:
        async def go() -> dict[str, Any]:
            client = await get_client()
            return await client.request(P.FunctionLookup(app=self._app_name, name=self._name))

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
        check_not_importing(self._name)
        root = self._root
        if root._found is None:
            client = await get_client()
            root._found = await client.request(P.FunctionLookup(app=self._app_name, name=self._name))
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
                self._fid = await client.request(P.FunctionBind(fid=found["fid"], params=values, config=config,
                                                                 definition=definition))
        return self._fid, bool(methods[method].get("is_generator"))


class _DeployedWebMethod(WebMethodBase):
    """A web endpoint method of a deployed class: called over HTTP at its URL, never with `.remote()`."""

    def __init__(self, obj: _DeployedObj, name: str, url: str | None) -> None:
        self._obj, self._name, self._url = obj, name, url

    @property
    def _qualname(self) -> str:
        return f"{self._obj._cls._name}.{self._name}"

    @property
    def web_url(self) -> str | None:
        return self._url

    def local(self, *args: Any, **kwargs: Any) -> Any:
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

