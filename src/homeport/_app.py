"""`App`: the unit a program defines, runs (`app.run()`, `homeport run`) and, later, deploys.

What it sends to the control plane when it runs or deploys (images, definitions, pool settings) is put
together by `_app_publish`.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import sys
import warnings
from collections.abc import Callable
from typing import Any

from . import _bridge
from . import _protocol as P
from ._app_publish import deploy_meta, lookup_info, print_web_urls, wire_config, with_images
from ._bridge import run_async, run_sync
from ._client import Client, default_log_printer, get_client
from ._cls_body import check_unregistered_classes
from ._cls_decorator import cls_decorator, function_class
from ._definition import (
    Registered,
    batch_definition,
    definition_of,
    input_settings,
    pool_config,
    web_definition,
)
from ._function import Function, is_generator_function
from ._image import Image
from ._options import function_options, unsupported_features
from ._partial import PartialFunction, _check_web_config, concurrency_settings
from ._protocol.definition import to_wire
from ._secret import Secret, check_object_name
from .exception import DeprecationError, InvalidError, UnimplementedError


class App:
    """A group of functions and classes that run together.

    ```python
    import homeport as modal

    app = modal.App("example")

    @app.function()
    def hello(name: str) -> str:
        return f"Hello, {name}!"

    @app.local_entrypoint()
    def main():
        print(hello.remote("world"))
    ```
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        image: Image | None = None,
        secrets: list[Secret] | tuple[Secret, ...] = (),
        volumes: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        include_source: bool = True,
    ) -> None:
        if name is not None and not isinstance(name, str):
            raise InvalidError("Invalid value for `name`: Must be string.")
        if image is not None and not isinstance(image, Image):
            raise InvalidError("`image=` has to be a `modal.Image` object")
        if not isinstance(secrets, (list, tuple)) or not all(isinstance(s, Secret) for s in secrets):
            raise InvalidError("`secrets=` has to be a list or tuple of `modal.Secret` objects")
        self._name = name
        self._image = image
        self._secrets = tuple(secrets)
        self._volumes = dict(volumes or {})
        self._tags = dict(tags or {})
        self._registered: dict[str, Registered] = {}
        # Objects whose name a later registration took (Modal: "the later one wins"): they stand for it.
        self._displaced: dict[str, list[Callable[..., None]]] = {}
        self._local_entrypoints: dict[str, Callable] = {}
        self._app_id: str | None = None
        self._running = False
        self._print_urls = True  # `homeport run` prints them in its own summary

    def __repr__(self) -> str:
        return f"App({self._name!r})"

    @property
    def name(self) -> str | None:
        return self._name

    @property
    def app_id(self) -> str | None:
        return self._app_id

    @property
    def image(self) -> Image | None:
        """The app's default image (`App(image=...)`), used by functions that name none."""
        return self._image

    @image.setter
    def image(self, value: Image) -> None:
        if not isinstance(value, Image):
            raise InvalidError("`image=` has to be a `modal.Image` object")
        self._image = value

    @property
    def registered_functions(self) -> dict[str, Any]:
        return {tag: r.obj for tag, r in self._registered.items()}

    @property
    def registered_entrypoints(self) -> dict[str, Callable]:
        return dict(self._local_entrypoints)

    def _merge_app_defaults(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs = dict(kwargs)
        if kwargs.get("image") is None and self._image is not None:
            kwargs["image"] = self._image
        if self._secrets:
            kwargs["secrets"] = [*self._secrets, *(kwargs.get("secrets") or [])]
        if self._volumes:
            kwargs["volumes"] = {**self._volumes, **(kwargs.get("volumes") or {})}
        return kwargs

    # --- decorators --------------------------------------------------------------------------------
    def function(self, **kwargs: Any) -> Callable[[Any], Function]:
        """Turn a function into one that runs in containers. All parameters are keyword-only."""
        kwargs = self._merge_app_defaults(kwargs)

        def decorator(f: Any) -> Any:
            if isinstance(f, Function):
                raise InvalidError(f"`@app.function` was applied twice to '{f.tag}'.")
            if inspect.isclass(f):
                return function_class(self, f, kwargs)
            if not callable(f):
                raise InvalidError(f"`@app.function` must decorate a function, got {type(f).__name__}")
            web = None
            if isinstance(f, PartialFunction):
                web = f.web
                f = f._finalize_for_function()
            qualname = f.__qualname__
            serialized = bool(kwargs.get("serialized"))
            if "<locals>" in qualname and not serialized:
                raise InvalidError(
                    "The `@app.function` decorator must apply to functions in global scope, unless "
                    "`serialized=True` is set. If trying to apply additional decorators, they may need to "
                    "use `functools.wraps`."
                )
            if "." in qualname and "<locals>" not in qualname:
                raise InvalidError(
                    "The `@app.function` decorator cannot be used on class methods. Please use `@app.cls` "
                    "with `@modal.method` instead."
                )
            tag = kwargs.get("name") or qualname
            is_gen = bool(kwargs.pop("is_generator", None)) or is_generator_function(f)
            options = function_options(tag=tag, raw_f=f, is_generator=is_gen, is_web=web is not None, **kwargs)
            fn = Function(self, f, tag, options, is_generator=is_gen, web=web)
            inputs = input_settings(f, options, getattr(f, P.BATCHED_ATTR, None))
            if web is not None and inputs["batch"] is not None:
                raise InvalidError(f"Web endpoint '{tag}' cannot be `@modal.batched`: HTTP requests are not batched.")
            definition = definition_of(tag, f, qualname, options, is_gen, max_inputs=inputs["max_inputs"],
                                          batch=batch_definition(inputs["batch"]), web=web_definition({None: web}))
            config = pool_config(options, inputs["max_inputs"], inputs["target_inputs"])
            self._register(Registered(tag, fn, options, definition, config, fn._hydrate))
            return fn

        return decorator

    def cls(self, _warn_parentheses_missing: Any = None, **kwargs: Any) -> Callable[[type], Any]:
        """Turn a class into a service whose methods run in containers (see `modal.Cls`)."""
        if _warn_parentheses_missing is not None:
            raise InvalidError("Did you forget parentheses? Suggestion: `@app.cls()`.")

        return cls_decorator(self, self._merge_app_defaults(kwargs))

    def _experimental_server(self, *, port: int, proxy_regions: list[str] | None = None,
                             startup_timeout: float = 30.0, label: str | None = None,
                             requires_proxy_auth: bool = False, **kwargs: Any) -> Callable[[type], Any]:
        """A class whose `@modal.enter()` hook starts an HTTP server on `port`; its URL reaches that
        server in every container (each container has its own network, so replicas share the port).

        ```python
        @app._experimental_server(port=8000)
        class Files:
            @modal.enter()
            def start(self):
                self.proc = subprocess.Popen(["python3", "-m", "http.server", "8000"])

            @modal.exit()
            def stop(self):
                self.proc.terminate()
        ```

        `proxy_regions` is accepted and has no effect: every request is served on this machine.
        """
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise InvalidError(f"`port` must be a local port between 1 and 65535, got {port!r}.")
        if isinstance(startup_timeout, bool) or not isinstance(startup_timeout, (int, float)) or startup_timeout <= 0:
            raise InvalidError("The `startup_timeout` argument must be positive.")
        if proxy_regions is not None and not isinstance(proxy_regions, (list, tuple)):
            raise InvalidError("`proxy_regions` must be a list of region names.")
        server = {"type": "server", "port": port, "startup_timeout": float(startup_timeout), "label": label,
                  "requires_proxy_auth": requires_proxy_auth}
        _check_web_config("server", server)
        return cls_decorator(self, self._merge_app_defaults(kwargs), server=server)

    def server(self, _warn_parentheses_missing: Any = None, *, port: int = 8000, name: str | None = None,
               unauthenticated: bool = False, startup_timeout: float = 30, exit_grace_period: float = 0,
               routing_region: str = "us-east", target_concurrency: float | None = None,
               max_concurrency: int | None = None, scaleup_window: float | None = None, h2_enabled: bool = False,
               **kwargs: Any) -> Callable[[type], Any]:
        """Modal's `@app.server(port=8000)`: a class whose `@modal.enter()` starts an HTTP server on `port`;
        `Server.get_url()` reaches it in every container. Authenticated by default (proxy-auth tokens,
        `homeport proxy-token create`); `unauthenticated=True` opens it. `routing_region` is accepted (all
        requests are served on this machine; `exit_grace_period` is checked and the exit hooks run as for any
        class); `max_concurrency` bounds the requests a container takes at once and the autoscaler aims for
        `target_concurrency` (without them, one request at a time per container).

        ```python
        @app.server(port=8000, unauthenticated=True)
        class Files:
            @modal.enter()
            def start(self):
                self.proc = subprocess.Popen(["python3", "-m", "http.server", "8000"])
        ```
        """
        if _warn_parentheses_missing is not None:
            raise InvalidError("Did you forget parentheses? Suggestion: `@app.server()`.")
        if not routing_region:
            raise InvalidError("The `routing_region` argument must be passed.")
        if isinstance(exit_grace_period, bool) or not isinstance(exit_grace_period, (int, float)) \
                or not 0 <= exit_grace_period <= 3600:
            raise InvalidError("The `exit_grace_period` argument must be between 0 and 3600 seconds.")
        if max_concurrency is not None and (isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int)
                                            or max_concurrency < 0):
            raise InvalidError("The `max_concurrency` argument must be a non-negative integer.")
        if target_concurrency is not None:
            if isinstance(target_concurrency, bool) or not isinstance(target_concurrency, (int, float)) \
                    or target_concurrency <= 0:
                raise InvalidError("The `target_concurrency` argument must be positive.")
            target_concurrency = round(max(1.0, float(target_concurrency)), 2)
            if max_concurrency is not None and target_concurrency > max_concurrency:
                raise InvalidError("The `target_concurrency` argument cannot be greater than `max_concurrency`.")
        if scaleup_window is not None and scaleup_window <= 0:
            raise InvalidError("The `scaleup_window` argument must be positive.")
        if h2_enabled:
            raise UnimplementedError("`@app.server(h2_enabled=True)`: HTTP/2 to the server is not built in Homeport yet.")
        if name is not None:
            kwargs["name"] = name
        make = self._experimental_server(port=port, startup_timeout=startup_timeout,
                                         requires_proxy_auth=not unauthenticated, **kwargs)

        def decorator(user_cls: type) -> Any:
            if not inspect.isclass(user_cls):
                raise InvalidError(f"`@app.server` must decorate a class, got {type(user_cls).__name__}")
            if "__init__" in vars(user_cls):
                raise InvalidError(f"Server class {user_cls.__name__} cannot have an `__init__`: set up the "
                                   "server in a `@modal.enter()` method.")
            if getattr(user_cls, P.CONCURRENT_ATTR, None) is not None:
                raise InvalidError(f"Server class {user_cls.__name__} cannot use `@modal.concurrent`: use "
                                   "`target_concurrency`/`max_concurrency` on `@app.server`.")
            if max_concurrency or target_concurrency:
                target = math.ceil(target_concurrency) if target_concurrency else None
                setattr(user_cls, P.CONCURRENT_ATTR, concurrency_settings(max_concurrency or target, target))
            return make(user_cls)

        return decorator

    def _register(self, reg: Registered) -> None:
        old = self._registered.get(reg.tag)
        if old is not None:
            warnings.warn(f"Warning: function name '{reg.tag}' collision! Overriding existing function.", stacklevel=3)
            if old.obj is not reg.obj:
                self._displaced.setdefault(reg.tag, []).append(old.hydrate)
        self._registered[reg.tag] = reg

    def local_entrypoint(self, _warn_parentheses_missing: Any = None, *, name: str | None = None) -> Callable:
        """Mark a function to run locally with `homeport run app.py`, inside the running app."""
        if _warn_parentheses_missing is not None:
            raise InvalidError("Did you forget parentheses? Suggestion: `@app.local_entrypoint()`.")

        def decorator(f: Callable) -> Callable:
            tag = name or f.__qualname__
            if tag in self._local_entrypoints:
                raise InvalidError(
                    f"Duplicate local entrypoint name: {tag}. Local entrypoint names must be unique."
                )
            self._local_entrypoints[tag] = f
            return f

        return decorator

    def include(self, other: App) -> App:
        for reg in other._registered.values():
            self._register(reg)
        return self

    # --- running -----------------------------------------------------------------------------------
    def run(self, *, show_logs: bool = True, detach: bool = False, **_: Any) -> _RunContext:
        """Run the app's functions for the duration of a `with` (or `async with`) block."""
        return _RunContext(self, show_logs, detach)

    def _check_supported(self) -> None:
        problems = []
        for reg in self._registered.values():
            for p in unsupported_features(reg.options):
                problems.append(f"  - {reg.tag}: {p}")
        if problems:
            raise UnimplementedError(
                "This app uses parameters whose effect Homeport does not build yet:\n" + "\n".join(problems)
            )
        check_unregistered_classes({r.definition.module_name for r in self._registered.values()})

    async def _start(self, show_logs: bool, detach: bool) -> None:
        if self._running:
            raise InvalidError("App is already running and can't be started again.")
        self._check_supported()
        client = await get_client()
        if show_logs:
            client.log_handler = default_log_printer
        # Images first: a failed build leaves no app behind.
        definitions = await with_images(client, list(self._registered.values()))
        self._app_id = await client.request(
            P.AppCreate(name=self._name, description=self._name, detach=detach)
        )
        functions = [
            {"tag": r.tag, "definition": to_wire(d), "config": wire_config(r)}
            for r, d in zip(self._registered.values(), definitions)
        ]
        try:
            reply = await client.request(P.AppPublish(app_id=self._app_id, functions=functions))
        except BaseException:
            await client.request(P.AppStop(app_id=self._app_id))  # nothing of it runs
            raise
        self._hydrate_all(reply)
        if show_logs and self._print_urls:
            print_web_urls(reply)
        self._running = True
        self._detached = detach
        if detach:
            _bridge.interrupt_cancels = False

    async def _stop(self, interrupted: bool = False) -> None:
        if not self._running:
            return
        self._running = False
        if getattr(self, "_detached", False) and not interrupted:
            _bridge.interrupt_cancels = True
        if interrupted and getattr(self, "_detached", False):
            # Modal's `--detach`: Ctrl-C ends the client, not the app (what it started goes on running).
            for reg in self._registered.values():
                reg.hydrate(None)
            print(f"The app keeps running (detached): stop it with `homeport app stop {self._app_id}`.",
                  file=sys.stderr, flush=True)
            return
        for reg in self._registered.values():
            reg.hydrate(None)
        for hooks in self._displaced.values():
            for hydrate in hooks:
                hydrate(None)
        current = Client._instance
        if not getattr(self, "_detached", False) and (current is None or current.closed):
            # The connection the app ran on is gone, and an ephemeral app ends with it (the control
            # plane stopped it, or itself stopped). Connecting again would start a new control plane
            # just to stop an app it never knew.
            return
        client = await get_client()
        await client.request(P.AppStop(app_id=self._app_id or ""))

    def deploy(self, *, name: str | None = None, environment_name: str | None = None, tag: str = "",
               client: Any = None, strategy: str = "rolling") -> App:
        """Deploy the app: its functions run, are scheduled and can be looked up by name until it is
        stopped (`homeport app stop NAME`), across client exits and control-plane restarts.
        Deploying again replaces the version atomically (`strategy="rolling"` and `"recreate"` both do:
        the old version's containers finish the inputs they have). `tag` is shown by `modal app history`."""
        name = name or self._name
        if not name:
            raise InvalidError("You need to either supply a deployment name or have a name set on the app.")
        if strategy not in ("rolling", "recreate"):
            raise InvalidError(f"`strategy` must be 'rolling' or 'recreate', got {strategy!r}.")
        if environment_name not in (None, "", "main"):
            raise UnimplementedError("Homeport has one environment ('main'); `environment_name=` cannot name another.")
        check_object_name(name, "App")  # the control plane checks it too
        self._check_supported()
        self._deploy_meta = deploy_meta(tag)
        run_sync(self._deploy(name))
        return self

    async def _deploy(self, name: str) -> dict[str, Any]:
        client = await get_client()
        regs = list(self._registered.values())
        definitions = await with_images(client, regs, show_logs=True)
        functions = [
            {"tag": r.tag, "definition": to_wire(d), "config": wire_config(r),
             "info": lookup_info(r.obj)}
            for r, d in zip(regs, definitions)
        ]
        reply = await client.request(P.AppDeploy(name=name, description=name, functions=functions,
                                                 meta=getattr(self, "_deploy_meta", None) or deploy_meta("")))
        self._app_id = reply["app_id"]
        self._deployed_version = reply["version"]
        self._hydrate_all(reply)
        return reply

    def _hydrate_all(self, reply: dict[str, Any]) -> None:
        self._web_urls = dict(reply.get("web_urls") or {})
        for tag, reg in self._registered.items():
            reg.hydrate(reply["ids"][tag], self._web_urls)
        for tag, hooks in self._displaced.items():
            for hydrate in hooks:
                hydrate(reply["ids"][tag], self._web_urls)

    @property
    def web_urls(self) -> dict[str, str]:
        """The URL of each web endpoint of the running (or deployed) app, by function or `Class.method`."""
        return dict(getattr(self, "_web_urls", {}))

    @classmethod
    def lookup(cls, name: str, *, client: Any = None, environment_name: str | None = None,
               create_if_missing: bool = False) -> App:
        """The deployed app called `name` (created empty if missing and asked to)."""
        async def go() -> dict[str, Any]:
            return await (await get_client()).request(
                P.AppLookup(name=name, create_if_missing=create_if_missing)
            )

        found = run_sync(go())
        app = cls(name)
        app._app_id = found["app_id"]
        return app


class _RunContext:
    def __init__(self, app: App, show_logs: bool, detach: bool) -> None:
        self.app, self.show_logs, self.detach = app, show_logs, detach

    def __enter__(self) -> App:
        run_sync(self.app._start(self.show_logs, self.detach))
        return self.app

    def __exit__(self, *exc: Any) -> None:
        run_sync(self.app._stop(interrupted=exc[0] is not None and issubclass(exc[0], KeyboardInterrupt)))

    async def __aenter__(self) -> App:
        await run_async(self.app._start(self.show_logs, self.detach))
        return self.app

    async def __aexit__(self, *exc: Any) -> None:
        interrupted = exc[0] is not None and issubclass(exc[0], (KeyboardInterrupt, asyncio.CancelledError))
        await run_async(self.app._stop(interrupted=interrupted))


class Stub(App):
    """The legacy name of `App`; keeps working with a deprecation warning."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        warnings.warn("`modal.Stub` is deprecated; use `modal.App` instead (a simple name change).",
                      DeprecationError, stacklevel=2)
        super().__init__(*args, **kwargs)
