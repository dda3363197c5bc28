"""Method-level decorators: `@method`, `@enter`, `@exit`, and the web, concurrency and batching ones.

Each returns a `PartialFunction` that `@app.cls` (or `@app.function` on a class) finalizes: the raw
function goes back on the class with a marker the container runtime reads (`_protocol.*_ATTR`).
Misuse is caught here, when the module is imported: hooks that take parameters or are `async def`,
decorators on a class or on a plain function, and decorators that cannot be combined.
"""

from __future__ import annotations

import inspect
import re
import warnings
from typing import Any

from . import _protocol as P
from ._function import Function
from .exception import DeprecationError, InvalidError, UnimplementedError


class PartialFunction:
    def __init__(self, raw_f: Any, *, method: dict[str, Any] | None = None,
                 lifecycle: tuple[str, bool] | None = None, web: dict[str, Any] | None = None) -> None:
        self.raw_f = raw_f
        self.method = method
        self.lifecycle = lifecycle
        self.web = web
        self.registered = False

    def __repr__(self) -> str:
        return f"PartialFunction({getattr(self.raw_f, '__qualname__', self.raw_f)!r})"

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        # Before `@app.cls` finalizes the class, behave like the plain function it wraps.
        return self.raw_f.__get__(obj, objtype) if obj is not None else self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.raw_f(*args, **kwargs)

    def _finalize_for_function(self) -> Any:
        """The raw function under `@app.function()`: only a web decorator belongs there."""
        if self.web is not None:
            self.registered = True
            return self.raw_f
        raise InvalidError(
            f"`{self}`: `@modal.method`, `@modal.enter` and `@modal.exit` belong on methods of a class "
            "registered with `@app.cls()`, not on a plain function."
        )

    def finalize(self) -> Any:
        """The raw function, marked for the runtime."""
        if self.lifecycle is not None:
            setattr(self.raw_f, P.LIFECYCLE_ATTR, self.lifecycle)
        if self.method is not None:
            setattr(self.raw_f, P.METHOD_ATTR, self.method)
        if self.web is not None:
            setattr(self.raw_f, P.WEB_ATTR, self.web)
        self.registered = True
        return self.raw_f


def _in_class_body(f: Any) -> bool:
    """Whether `f` was defined in a class body (`C.f`, `outer.<locals>.C.f`), judged by its qualname."""
    qualname = getattr(f, "__qualname__", None)
    if not isinstance(qualname, str):
        return True  # not a plain Python function: nothing to judge by
    parts = qualname.split(".")
    return len(parts) >= 2 and parts[-2] != "<locals>"


def _name(f: Any) -> str:
    """`C.setup` for a method of a class defined inside a function, not `test.<locals>.C.setup`."""
    return getattr(f, "__qualname__", repr(f)).split("<locals>.")[-1]


def _lifecycle_combined(raw: Any, hook: str, other: str) -> InvalidError:
    """`@modal.enter/exit` and an interface decorator (`method` or a web one) on one method."""
    when = "starts" if hook == "enter" else "stops"
    cannot = "be called remotely" if other == "method" else "serve web requests"
    uses = f" (it can use what `{raw.__name__}` sets on `self`)" if hook == "enter" else ""
    return InvalidError(
        "Interface decorators cannot be combined with lifecycle decorators. "
        f"`{_name(raw)}` has both `@modal.{hook}()` and `@modal.{other}()`, but a lifecycle hook runs when the "
        f"container {when} and cannot {cannot}. Use two methods: keep `@modal.{hook}()` on `{raw.__name__}` and put "
        f"`@modal.{other}()` on another method{uses}."
    )


def _check_target(f: Any, decorator: str) -> None:
    if inspect.isclass(f):
        raise InvalidError(f"Cannot apply `@modal.{decorator}` to a class. Hint: consider applying to a method instead.")
    if isinstance(f, Function):
        raise InvalidError(
            f"Cannot stack `@modal.{decorator}` on top of `@app.function`. Hint: swap the order of the decorators."
        )
    if type(f).__name__ == "Cls":
        raise InvalidError(
            f"Cannot stack `@modal.{decorator}` on top of `@app.cls()`: it belongs on a method inside the class. "
            "Hint: move it onto one of the class's methods."
        )


def _check_in_class(raw: Any, decorator: str) -> None:
    if not _in_class_body(raw):
        raise InvalidError(
            f"`@modal.{decorator}()` can only be used on methods of a class registered with `@app.cls()`, but "
            f"`{_name(raw)}` is a plain function. Define it inside the class, or use `@app.function()` "
            "to run a plain function remotely."
        )


def method(_warn_parentheses_missing: Any = None, *, is_generator: bool | None = None) -> Any:
    """Mark a method of an `@app.cls` class as callable remotely: `Obj().method.remote(...)`."""
    if _warn_parentheses_missing is not None:
        raise InvalidError("Positional arguments are not allowed. Did you forget parentheses? Suggestion: `@modal.method()`.")

    def decorator(f: Any) -> PartialFunction:
        _check_target(f, "method")
        if isinstance(f, PartialFunction):
            if f.lifecycle is not None:
                raise _lifecycle_combined(f.raw_f, f.lifecycle[0], "method")
            if f.web is not None:
                raise InvalidError("Callable decorators cannot be combined with web interface decorators.")
            if f.method is not None:
                raise InvalidError("Cannot apply `@modal.method` twice.")
        raw = f.raw_f if isinstance(f, PartialFunction) else f
        _check_in_class(raw, "method")
        gen = is_generator if is_generator is not None else (
            inspect.isgeneratorfunction(raw) or inspect.isasyncgenfunction(raw)
        )
        if isinstance(f, PartialFunction):
            f.method = {"is_generator": bool(gen)}
            return f
        return PartialFunction(f, method={"is_generator": bool(gen)})

    return decorator


def _lifecycle(kind: str, snap: bool) -> Any:
    name = "enter" if kind == "enter" else "exit"

    def decorator(f: Any) -> PartialFunction:
        _check_target(f, name)
        raw = f.raw_f if isinstance(f, PartialFunction) else f
        if isinstance(f, PartialFunction):
            if f.method is not None:
                raise _lifecycle_combined(raw, kind, "method")
            if f.web is not None:
                raise _lifecycle_combined(raw, kind, f.web["type"])
            if f.lifecycle is not None:
                raise InvalidError(
                    f"`@modal.{name}()` cannot be combined with `@modal.{f.lifecycle[0]}()` on the same method "
                    f"`{_name(raw)}`; use one method per hook."
                )
        _check_in_class(raw, name)
        if inspect.iscoroutinefunction(raw) or inspect.isasyncgenfunction(raw):
            raise InvalidError(
                f"`@modal.{name}()` hook `{_name(raw)}` is `async def`; lifecycle hooks must be plain "
                f"(sync) functions. Use `def {raw.__name__}(self):` and run async work with `asyncio.run(...)`."
            )
        params = list(inspect.signature(raw).parameters.values())
        if len(params) != 1 or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
            raise InvalidError(
                f"`@modal.{name}()` hook `{_name(raw)}` must take no parameters other than `self`; "
                f"got ({', '.join(p.name for p in params)}). Load configuration inside the hook instead."
            )
        return PartialFunction(raw, lifecycle=(kind, snap))

    return decorator


def enter(_warn_parentheses_missing: Any = None, *, snap: bool = False) -> Any:
    """Run a method once when a container starts, before it takes inputs."""
    if _warn_parentheses_missing is not None:
        raise InvalidError("Positional arguments are not allowed. Did you forget parentheses? Suggestion: `@modal.enter()`.")
    if not isinstance(snap, bool):
        raise InvalidError(f"`snap` must be True or False, not {snap!r}")
    return _lifecycle("enter", snap)


def exit(_warn_parentheses_missing: Any = None) -> Any:
    """Run a method when a container stops (scaled down, app stopped, control plane shutting down)."""
    if _warn_parentheses_missing is not None:
        raise InvalidError("Positional arguments are not allowed. Did you forget parentheses? Suggestion: `@modal.exit()`.")
    return _lifecycle("exit", False)


def _web(kind: str, config: dict[str, Any]) -> Any:
    """A web decorator: its composition with other decorators and the shape of the function are
    checked now; `@app.function` / `@app.cls` turn it into an endpoint served by the gateway."""
    _check_web_config(kind, config)

    def decorator(f: Any) -> PartialFunction:
        _check_target(f, kind)
        if isinstance(f, PartialFunction):
            if f.lifecycle is not None:
                raise _lifecycle_combined(f.raw_f, f.lifecycle[0], kind)
            if f.method is not None:
                raise InvalidError("Callable decorators cannot be combined with web interface decorators.")
            if f.web is not None:
                raise InvalidError("Cannot set `webhook_config` twice.")
        raw = f.raw_f if isinstance(f, PartialFunction) else f
        if inspect.isgeneratorfunction(raw) or inspect.isasyncgenfunction(raw):
            if kind == "fastapi_endpoint":
                raise InvalidError(
                    "Webhooks cannot be generators. If you want a streaming response, return a "
                    "`fastapi.responses.StreamingResponse` instead."
                )
            raise InvalidError("Webhooks cannot be generators")
        if kind != "fastapi_endpoint":
            _check_nullary_factory(raw, kind)
        return PartialFunction(raw, web={"type": kind, **config})

    return decorator


def _check_nullary_factory(raw: Any, kind: str) -> None:
    """`asgi_app`, `wsgi_app` and `web_server` functions are called once per container, with no
    arguments (a method: only `self`)."""
    if inspect.iscoroutinefunction(raw):
        raise InvalidError(f"The `@modal.{kind}` decorator can't be applied to an async function.")
    params = list(inspect.signature(raw).parameters.values())
    if _in_class_body(raw) and params and params[0].name == "self":
        params = params[1:]
    if any(p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        raise InvalidError(f"Functions decorated by `@modal.{kind}` can't have parameters.")


def _check_web_config(kind: str, config: dict[str, Any]) -> None:
    label = config.get("label")
    if label is not None:
        # A DNS label, as Modal's URLs use it: 1-63 letters, digits and dashes, not starting or ending
        # with a dash.
        if not isinstance(label, str) or not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?", label):
            raise InvalidError(
                "`label` must be 1 to 63 letters, digits and dashes, not starting or ending with a dash; "
                f"got {label!r}."
            )
        config["label"] = label.lower()
    if config.get("custom_domains"):
        raise UnimplementedError(
            f"`@modal.{kind}(custom_domains=...)` is not supported by Homeport yet: endpoints are served on "
            "this machine's gateway ports. Remove `custom_domains` and put your own reverse proxy in front."
        )
    config.pop("custom_domains", None)
    if not isinstance(config.get("requires_proxy_auth", False), bool):
        raise InvalidError("`requires_proxy_auth` must be True or False.")
    if kind == "fastapi_endpoint":
        method = config.get("method", "GET")
        if not isinstance(method, str) or not method.isalpha():
            raise InvalidError(f"`method` must be an HTTP method such as \"GET\" or \"POST\", got {method!r}.")
        config["method"] = method.upper()
        if not isinstance(config.get("docs", False), bool):
            raise InvalidError("`docs` must be True or False.")


def _no_positional(kind: str, arg: Any) -> None:
    if arg is not None:
        raise InvalidError(
            f"Positional arguments are not allowed. Did you forget parentheses? Suggestion: `@modal.{kind}()`."
        )


def fastapi_endpoint(_warn_parentheses_missing: Any = None, *, method: str = "GET", label: str | None = None,
                     custom_domains: Any = None, docs: bool = False, requires_proxy_auth: bool = False) -> Any:
    """Serve the function over HTTP: FastAPI parses its parameters from the query (or a JSON body)
    and turns what it returns into JSON. The URL is printed when the app runs and is `f.web_url`.

    ```python
    @app.function()
    @modal.fastapi_endpoint(method="POST")
    def square(x: int):
        return {"square": x * x}
    ```
    """
    _no_positional("fastapi_endpoint", _warn_parentheses_missing)
    return _web("fastapi_endpoint", {"method": method, "label": label, "custom_domains": custom_domains,
                                     "docs": docs, "requires_proxy_auth": requires_proxy_auth})


def web_endpoint(_warn_parentheses_missing: Any = None, *, method: str = "GET", label: str | None = None,
                 custom_domains: Any = None, docs: bool = False, requires_proxy_auth: bool = False) -> Any:
    """The legacy name of `fastapi_endpoint`; keeps working with a deprecation warning."""
    _no_positional("web_endpoint", _warn_parentheses_missing)
    warnings.warn("`@modal.web_endpoint` is deprecated; it has been renamed to `@modal.fastapi_endpoint`.",
                  DeprecationError, stacklevel=2)
    return _web("fastapi_endpoint", {"method": method, "label": label, "custom_domains": custom_domains,
                                     "docs": docs, "requires_proxy_auth": requires_proxy_auth})


def asgi_app(_warn_parentheses_missing: Any = None, *, label: str | None = None, custom_domains: Any = None,
             requires_proxy_auth: bool = False) -> Any:
    """Serve the ASGI app (FastAPI, Starlette ...) that the function returns; the function runs once
    per container, and the app's lifespan events run too."""
    _no_positional("asgi_app", _warn_parentheses_missing)
    return _web("asgi_app", {"label": label, "custom_domains": custom_domains,
                             "requires_proxy_auth": requires_proxy_auth})


def wsgi_app(_warn_parentheses_missing: Any = None, *, label: str | None = None, custom_domains: Any = None,
             requires_proxy_auth: bool = False) -> Any:
    """Serve the WSGI app (Flask, Django ...) that the function returns."""
    _no_positional("wsgi_app", _warn_parentheses_missing)
    return _web("wsgi_app", {"label": label, "custom_domains": custom_domains,
                             "requires_proxy_auth": requires_proxy_auth})


def web_server(port: Any = None, *, startup_timeout: float = 5.0, label: str | None = None,
               custom_domains: Any = None, requires_proxy_auth: bool = False) -> Any:
    """Serve the HTTP server that the function starts on `port` (in a subprocess or a thread).

    Each container has its own network, so every replica can listen on the same port; requests reach
    it once it accepts connections (within `startup_timeout` seconds).
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise InvalidError("First argument of `@web_server` must be a local port, such as `@web_server(8000)`.")
    if isinstance(startup_timeout, bool) or not isinstance(startup_timeout, (int, float)) or startup_timeout <= 0:
        raise InvalidError("The `startup_timeout` argument of `@web_server` must be positive.")
    return _web("web_server", {"port": port, "startup_timeout": float(startup_timeout), "label": label,
                               "custom_domains": custom_domains, "requires_proxy_auth": requires_proxy_auth})


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def concurrency_settings(max_inputs: Any, target_inputs: Any) -> dict[str, int | None]:
    """Validated `@modal.concurrent` settings (also used by `with_concurrency`)."""
    if max_inputs is None:
        raise TypeError("`@modal.concurrent()` missing required argument: `max_inputs`.")
    if not _is_int(max_inputs) or max_inputs < 1:
        raise InvalidError(f"`max_inputs` must be a positive integer, not {max_inputs!r}.")
    if target_inputs is not None:
        if isinstance(target_inputs, float):
            raise InvalidError(
                "The `target_inputs` argument must be an integer; fractional values are only supported for Servers."
            )
        if not _is_int(target_inputs) or target_inputs < 1:
            raise InvalidError(f"`target_inputs` must be a positive integer, not {target_inputs!r}.")
        if target_inputs > max_inputs:
            raise InvalidError("`target_inputs` parameter cannot be greater than `max_inputs`.")
    return {"max_inputs": max_inputs, "target_inputs": target_inputs}


def batch_settings(max_batch_size: Any, wait_ms: Any) -> dict[str, int]:
    """Validated `@modal.batched` settings (also used by `with_batching`)."""
    if not _is_int(max_batch_size) or max_batch_size < 1:
        raise InvalidError("max_batch_size must be a positive integer.")
    if max_batch_size > 1000:
        raise InvalidError("max_batch_size cannot be greater than 1000.")
    if not _is_int(wait_ms) or wait_ms < 0:
        raise InvalidError("wait_ms must be a non-negative integer.")
    if wait_ms > 600_000:
        raise InvalidError("wait_ms cannot be greater than 600000.")
    return {"max_batch_size": max_batch_size, "wait_ms": wait_ms}


def concurrent(_warn_parentheses_missing: Any = None, *, max_inputs: int | None = None,
               target_inputs: int | None = None) -> Any:
    """Let one container run up to `max_inputs` inputs at once (threads for sync functions, the event
    loop for async ones); the autoscaler aims for `target_inputs` per container.

    Stack it under `@app.function()`, or put it on the class under `@app.cls()`.
    """
    if _warn_parentheses_missing is not None:
        raise InvalidError("Positional arguments are not allowed. Did you forget parentheses? Suggestion: `@modal.concurrent()`.")
    settings = concurrency_settings(max_inputs, target_inputs)

    def decorator(f: Any) -> Any:
        if isinstance(f, PartialFunction):
            if f.web is not None and not _in_class_body(f.raw_f):
                # `@app.function()` / `@modal.concurrent(...)` / `@modal.asgi_app()`: Modal's order.
                setattr(f.raw_f, P.CONCURRENT_ATTR, settings)
                return f
            raise InvalidError("The `@modal.concurrent` decorator cannot be used on methods; decorate the class instead.")
        if isinstance(f, Function) or type(f).__name__ == "Cls":
            raise InvalidError(
                "Cannot stack `@modal.concurrent` on top of `@app.function` or `@app.cls`. "
                "Hint: swap the order of the decorators."
            )
        if not callable(f):
            raise InvalidError("`@modal.concurrent` must decorate a function or a class.")
        setattr(f, P.CONCURRENT_ATTR, settings)
        return f

    return decorator


def batched(_warn_parentheses_missing: Any = None, *, max_batch_size: int, wait_ms: int) -> Any:
    """Dynamic batching: the function receives lists (one per parameter) of up to `max_batch_size`
    inputs, gathered for at most `wait_ms`; callers call it with single items.
    """
    if _warn_parentheses_missing is not None:
        raise InvalidError("Positional arguments are not allowed. Did you forget parentheses? Suggestion: `@modal.batched()`.")
    settings = batch_settings(max_batch_size, wait_ms)

    def decorator(f: Any) -> Any:
        _check_target(f, "batched")
        if isinstance(f, PartialFunction):
            raise InvalidError("`@modal.batched` cannot be combined with other method decorators.")
        name = getattr(f, "__name__", repr(f))
        if inspect.isgeneratorfunction(f) or inspect.isasyncgenfunction(f):
            raise InvalidError(f"Modal batched function {name} cannot return generators")
        for p in inspect.signature(f).parameters.values():
            if p.default is not p.empty:
                raise InvalidError(f"Modal batched function {name} does not accept default arguments.")
        setattr(f, P.BATCHED_ATTR, settings)
        # On a method of an `@app.cls` class it acts as `@modal.method()`; on a function `@app.function`
        # reads the marker.
        if _in_class_body(f):
            return PartialFunction(f, method={"is_generator": False, "batched": settings})
        return f

    return decorator


