"""`App`: the unit a program defines, runs (`app.run()`, `homeport run`) and, later, deploys."""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import cloudpickle

from . import _protocol as P
from ._bridge import run_async, run_sync
from ._client import default_log_printer, get_client
from ._function import Function, is_generator_function
from ._image import Image
from ._image_request import build_request, code_dirs, distinct
from ._options import (
    FunctionOptions,
    function_options,
    merged_env,
    secret_refs,
    unsupported_features,
    volume_refs,
)
from ._progress import ImageBuildStatus
from ._secret import Secret
from .exception import DeprecationError, InvalidError, UnimplementedError


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


def build_definition(
    tag: str, target: Any, qualname: str, options: FunctionOptions, is_generator: bool, **extra: Any
) -> dict[str, Any]:
    """What a container needs to find and run the user's code (sent to the runtime at hello)."""
    module_name, module_file = _module_location(target)
    serialized = None
    if options.serialized or module_file is None:
        serialized = cloudpickle.dumps(target)
    return {
        "tag": tag,
        "module_name": module_name,
        "module_file": module_file,
        # The app's own file as it was when the app started or was deployed: its containers run that
        # code even after the file is edited (or removed), as Modal runs what it mounted at deploy time.
        "module_source": _read_source(module_file) if serialized is None else None,
        "qualname": qualname,
        "serialized": serialized,
        "is_generator": is_generator,
        "timeout": options.timeout,
        "startup_timeout": options.startup_timeout or options.timeout,
        "snapshot": options.enable_memory_snapshot,
        # Where it may run (a cluster backend places it on a node of one of these regions).
        "region": list(options.region) if options.region else None,
        # GPUs it needs ("TYPE:COUNT", in order of preference): a backend that cannot give them refuses it.
        "gpu": list(options.gpu) if options.gpu else None,
        # The caller's own source (the module's directory, the working directory), never its packages.
        "sys_path": code_dirs(module_name, module_file),
        "cwd": os.getcwd(),
        **extra,
    }


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


def pool_config(options: FunctionOptions, max_inputs: int = 1, target_inputs: int | None = None) -> dict[str, Any]:
    return {
        "min_containers": options.min_containers,
        "max_containers": options.max_containers,
        "buffer_containers": options.buffer_containers,
        "scaledown_window": options.scaledown_window,
        "gpu": list(options.gpu) if options.gpu else None,  # "TYPE:COUNT", in order of preference
        "max_inputs": max_inputs,
        "target_inputs": target_inputs,
        **resource_config(options),
        "schedule": options.schedule.to_dict() if options.schedule is not None else None,
        "env": merged_env(options),
        "secret_refs": secret_refs(options),
        "volumes": None,  # resolved when the app runs (ephemeral volumes get their name then)
        "retries": options.retries.to_dict() if options.retries is not None else None,
    }


class _Registered:
    """A function or class of an app, as it will be published to the control plane."""

    def __init__(self, tag: str, obj: Any, options: FunctionOptions, definition: dict[str, Any],
                 config: dict[str, Any], hydrate: Callable[..., None]) -> None:
        self.tag, self.obj, self.options = tag, obj, options
        self.definition, self.config, self.hydrate = definition, config, hydrate


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
        self._registered: dict[str, _Registered] = {}
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
                from ._cls import function_class

                return function_class(self, f, kwargs)
            if not callable(f):
                raise InvalidError(f"`@app.function` must decorate a function, got {type(f).__name__}")
            from ._partial import PartialFunction

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
            definition = build_definition(tag, f, qualname, options, is_gen, max_inputs=inputs["max_inputs"],
                                          batch=inputs["batch"], web=web_definition({None: web}))
            config = pool_config(options, inputs["max_inputs"], inputs["target_inputs"])
            self._register(_Registered(tag, fn, options, definition, config, fn._hydrate))
            return fn

        return decorator

    def cls(self, _warn_parentheses_missing: Any = None, **kwargs: Any) -> Callable[[type], Any]:
        """Turn a class into a service whose methods run in containers (see `modal.Cls`)."""
        from ._cls import cls_decorator

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
        from ._cls import cls_decorator
        from ._partial import _check_web_config

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
                import math

                from ._partial import concurrency_settings

                target = math.ceil(target_concurrency) if target_concurrency else None
                setattr(user_cls, P.CONCURRENT_ATTR, concurrency_settings(max_concurrency or target, target))
            return make(user_cls)

        return decorator

    def _register(self, reg: _Registered) -> None:
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
        from ._cls import check_unregistered_classes

        check_unregistered_classes({r.definition["module_name"] for r in self._registered.values()})

    async def _start(self, show_logs: bool, detach: bool) -> None:
        if self._running:
            raise InvalidError("App is already running and can't be started again.")
        self._check_supported()
        client = await get_client()
        if show_logs:
            client.log_handler = default_log_printer
        # Images first: a failed build leaves no app behind.
        definitions = await _with_images(client, list(self._registered.values()))
        self._app_id = await client.request(
            {"t": P.APP_CREATE, "name": self._name, "description": self._name, "detach": detach}
        )
        functions = [
            {"tag": r.tag, "definition": d, "config": {**r.config, "volumes": volume_refs(r.options)}}
            for r, d in zip(self._registered.values(), definitions)
        ]
        try:
            reply = await client.request({"t": P.APP_PUBLISH, "app_id": self._app_id, "functions": functions})
        except BaseException:
            await client.request({"t": P.APP_STOP, "app_id": self._app_id})  # nothing of it runs
            raise
        self._hydrate_all(reply)
        if show_logs and self._print_urls:
            _print_web_urls(reply)
        self._running = True
        self._detached = detach
        if detach:
            from . import _bridge

            _bridge.interrupt_cancels = False

    async def _stop(self, interrupted: bool = False) -> None:
        if not self._running:
            return
        self._running = False
        if getattr(self, "_detached", False) and not interrupted:
            from . import _bridge

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
        from ._client import Client

        current = Client._instance
        if not getattr(self, "_detached", False) and (current is None or current.closed):
            # The connection the app ran on is gone, and an ephemeral app ends with it (the control
            # plane stopped it, or itself stopped). Connecting again would start a new control plane
            # just to stop an app it never knew.
            return
        client = await get_client()
        await client.request({"t": P.APP_STOP, "app_id": self._app_id})

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
        from ._secret import check_object_name

        check_object_name(name, "App")  # the control plane checks it too
        self._check_supported()
        self._deploy_meta = _deploy_meta(tag)
        run_sync(self._deploy(name))
        return self

    async def _deploy(self, name: str) -> dict[str, Any]:
        client = await get_client()
        regs = list(self._registered.values())
        definitions = await _with_images(client, regs, show_logs=True)
        functions = [
            {"tag": r.tag, "definition": d, "config": {**r.config, "volumes": volume_refs(r.options)},
             "info": _lookup_info(r.obj)}
            for r, d in zip(regs, definitions)
        ]
        reply = await client.request({"t": P.APP_DEPLOY, "name": name, "description": name, "functions": functions,
                                      "meta": getattr(self, "_deploy_meta", None) or _deploy_meta("")})
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
                {"t": P.APP_LOOKUP, "name": name, "create_if_missing": create_if_missing}
            )

        found = run_sync(go())
        app = cls(name)
        app._app_id = found["app_id"]
        return app


def _deploy_meta(tag: str) -> dict[str, str]:
    """What `modal app history` shows of a version: its tag, the client, who deployed it and the git commit
    of the working directory (when it is a git checkout)."""
    import getpass
    import subprocess

    from . import __version__

    commit = ""
    try:
        out = subprocess.run(["git", "rev-parse", "--short=7", "HEAD"], capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            commit = out.stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                   text=True, timeout=5)
            if dirty.returncode == 0 and dirty.stdout.strip():
                commit += "-dirty"
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = ""
    return {"tag": tag or "", "client": f"homeport {__version__}", "deployed_by": user, "commit": commit}


async def _with_images(client: Any, regs: list[_Registered], show_logs: bool = False) -> list[dict[str, Any]]:
    """Have the control plane build (or find cached) the image of each function; return the functions'
    definitions naming their image. A function without `image=` runs in `Image.debian_slim()`."""
    images = [r.options.image or Image.debian_slim() for r in regs]
    unique = distinct(images)
    if not unique:
        return []
    requests = [build_request(image) for image in unique]
    saved = client.log_handler
    printer = saved
    if show_logs and saved is None:
        printer = lambda msg: default_log_printer(msg) if msg.get("fn") == "image" else None  # noqa: E731
    status = ImageBuildStatus()  # on a terminal: a spinner naming the step being built
    from . import _build_log, _config
    from ._progress import interactive

    summary = None
    if _build_log.summarise_wanted(interactive()):  # on a terminal: the steps; the rest in a file
        summary = _build_log.BuildLogSummary(os.path.join(str(_config.state_dir()), "image-logs"))

    def on_log(msg: dict[str, Any]) -> None:
        status.on_log(msg)
        if summary is not None and msg.get("fn") == "image" and not summary.feed(_build_log.printable(msg)):
            return
        if printer is not None:
            printer(msg)

    client.log_handler = on_log
    failed = True
    try:
        # No deadline: a build takes as long as its steps do, each bounded by the control plane.
        ids = await client.request({"t": P.IMAGE_BUILD, "images": requests}, timeout=None)
        failed = False
    finally:
        client.log_handler = saved
        status.close()
        if summary is not None and printer is not None:
            for line in summary.close(failed):
                printer({"fn": "image", "cid": "", "fd": 2, "data": line})
    hashes = [image.content_hash() for image in unique]
    return [
        dict(r.definition, image_id=ids[unique.index(image)], image_hash=hashes[unique.index(image)])
        for r, image in zip(regs, images)
    ]


def _lookup_info(obj: Any) -> dict[str, Any]:
    """What `Cls.from_name` needs to know about a deployed class: its methods (and which of them are
    web endpoints, called over HTTP only) and parameters."""
    methods = getattr(obj, "_methods", None)
    if methods is None or not hasattr(obj, "_params"):
        return {}
    params = {}
    for pname, (typ, default, *_) in obj._params.items():
        params[pname] = {"type": typ.__name__, "has_default": default is not _no_default(), "default": None if default is _no_default() else default}
    return {"methods": {m: {"is_generator": bool(info.get("is_generator")), "batched": info.get("batched")}
                        for m, info in methods.items()},
            "web_methods": sorted(m for m in getattr(obj, "_web_methods", {}) if m is not None),
            "params": params,
            "options": {"startup_timeout_set": obj._options.startup_timeout is not None}}


def _no_default() -> Any:
    from ._cls import _NO_DEFAULT

    return _NO_DEFAULT


def _print_web_urls(reply: dict[str, Any]) -> None:
    for name, url in sorted((reply.get("web_urls") or {}).items()):
        print(f"✓ Created web endpoint for {name} => {url}", file=sys.stderr, flush=True)


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
