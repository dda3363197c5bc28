"""`Function`: what `@app.function` returns (`FunctionCall`, what `.spawn()` gives back, is in `_function_call`)."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from . import _context
from . import _protocol as P
from ._bridge import GeneratorWithAio, MethodWithAio, bridge_loop, run_async, run_sync
from ._client import Client, get_client
from ._function_call import FunctionCall
from ._map import MapMethod, MapRun, aiter_inputs
from ._serialization import decode_output, output_error, serialize_args
from ._session import connection_lost
from ._syncchan import SyncChannel
from .exception import ExecutionError, InvalidError

if TYPE_CHECKING:
    from ._definition import Registry
    from ._options import FunctionOptions

_call_prefix = ""
_call_counter = itertools.count(1)


def _new_call_prefix() -> None:
    """Call ids are this process's random prefix and a counter. A container forked from a template
    that imported this module must not reuse the template's: its calls would collide with its
    siblings', and the control plane would send one container's outputs to another (streamed web
    responses that never ended under concurrency). So every forked child makes its own."""
    global _call_prefix, _call_counter
    _call_prefix = f"fc-{os.urandom(6).hex()}"
    _call_counter = itertools.count(1)


_new_call_prefix()
os.register_at_fork(after_in_child=_new_call_prefix)


def _new_call_id() -> str:
    return f"{_call_prefix}{next(_call_counter):010d}"


class _DirectMethod(MethodWithAio):
    """A call method that, from synchronous code, calls a hydrated function over the calling thread's
    own blocking connection (see `_syncchan`: no hop to the event-loop thread and back per call);
    `.aio` and everything else use the event-loop client."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Function, impl: Any, name: str) -> None:
        super().__init__(impl, name)
        self._fn = fn

    def _direct(self, args: tuple, kwargs: dict) -> tuple[str, bytes] | None:
        """(function id, pickled arguments) when this call can go over the thread's own connection."""
        fn = self._fn
        fid = fn._function_id
        plain = type(fn)._resolve_fid is Function._resolve_fid or isinstance(fn, _DeployedFunction)
        if fid is None or not plain:
            return None
        fn._check_not_generator(self.__name__)
        return fid, serialize_args(fn._tag, args, kwargs)


class _RemoteMethod(_DirectMethod):
    """`f.remote(...)`."""

    __slots__ = ()

    def __init__(self, fn: Function) -> None:
        super().__init__(fn, fn._remote, "remote")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        direct = self._direct(args, kwargs)
        if direct is None:
            return super().__call__(*args, **kwargs)
        fn = self._fn
        status, out = SyncChannel.get().call(direct[0], _new_call_id(), direct[1], fn._method)
        return decode_output(fn._tag, status, out)


class _SpawnMethod(_DirectMethod):
    """`f.spawn(...)`."""

    __slots__ = ()

    def __init__(self, fn: Function) -> None:
        super().__init__(fn, fn._spawn, "spawn")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        direct = self._direct(args, kwargs)
        if direct is None:
            return super().__call__(*args, **kwargs)
        call_id = _new_call_id()
        ack = SyncChannel.get().spawn(direct[0], call_id, direct[1], self._fn._method)
        call = FunctionCall(call_id, self._fn._tag)
        if not ack.done:
            call._ack = ack  # `.get()` / `.cancel()` wait for the acceptance (see `_syncchan`)
        return call


def webhook_call_error(how: str, tag: str, url: str | None) -> InvalidError:
    """Modal's error for `.remote()` (or `.map`, `.spawn` ...) of a web endpoint."""
    where = f"its web url '{url}'" if url else "its web url (printed when the app runs)"
    return InvalidError(
        f"A webhook function cannot be invoked for remote execution with `.{how}`. Invoke this function "
        f"via {where} or call it locally: {tag}.local()"
    )


class Function:
    """A function that runs in containers. Made by `@app.function()`.

    ```python
    @app.function()
    def square(x):
        return x * x

    with app.run():
        assert square.remote(3) == 9
        assert list(square.map([1, 2, 3])) == [1, 4, 9]
    ```
    """

    def __init__(
        self,
        app: Registry | None,
        raw_f: Any,
        tag: str,
        options: FunctionOptions | None,
        *,
        is_generator: bool,
        definition: dict[str, Any] | None = None,
        method: str | None = None,
        web: dict[str, Any] | None = None,
    ) -> None:
        self._app = app
        self._raw_f = raw_f
        self._tag = tag
        self._options = options
        self._is_generator = is_generator
        self._definition = definition
        self._method = method  # set on methods of a class: which callable in the container
        self._function_id: str | None = None
        self._web = web  # the web endpoint config: such a function is called over HTTP only
        self._web_url: str | None = None
        setattr(self, P.USER_CALLABLE_ATTR, raw_f)
        if raw_f is not None:
            self.__doc__ = getattr(raw_f, "__doc__", None)
            self.__name__ = getattr(raw_f, "__name__", tag)
            self.__qualname__ = getattr(raw_f, "__qualname__", tag)
            self.__module__ = getattr(raw_f, "__module__", None)  # type: ignore[assignment]  # typeshed says str; a callable's may be None
        self.remote = _RemoteMethod(self)
        self.spawn = _SpawnMethod(self)
        self.remote_gen = GeneratorWithAio(self._remote_gen, "remote_gen")
        self.map = MapMethod(self)
        self.starmap = MapMethod(self, star=True)
        self.for_each = MapMethod(self, for_each=True)

    def __repr__(self) -> str:
        return f"Function({self._tag!r})"

    @property
    def tag(self) -> str:
        return self._tag

    @property
    def object_id(self) -> str | None:
        return self._function_id

    @property
    def is_generator(self) -> bool:
        return self._is_generator

    @property
    def web_url(self) -> str | None:
        return self._web_url

    def get_web_url(self) -> str | None:
        """The URL of this web endpoint (also inside a container of its app); None for other functions."""
        if self._web_url is None and self._web is not None and in_container() and self._function_id is None:
            self._web_url = run_sync(_own_web_url(self._tag))
        return self._web_url

    def _hydrate(self, function_id: str | None, web_urls: dict[str, str] | None = None) -> None:
        self._function_id = function_id
        self._web_url = (web_urls or {}).get(self._tag) if function_id is not None else None

    @classmethod
    def from_name(cls, app_name: str, name: str, *, environment_name: str | None = None,
                  version: int | str | None = None) -> Function:
        """A function of a deployed app, looked up by name when it is first used.

        ```python
        square = modal.Function.from_name("my-app", "square")
        square.remote(3)
        ```
        """
        if "." in name:
            raise InvalidError(
                f"Function.from_name('{app_name}', '{name}'): to call a method of a deployed class, use "
                f"`modal.Cls.from_name('{app_name}', '{name.split('.')[0]}')`."
            )
        fn = _DeployedFunction(app_name, name)
        if version is not None:
            # Modal's versions read "v3" in `modal app history`; 3 and "v3" both name it.
            text = str(version).lower().removeprefix("v")
            if not text.isdigit():
                raise InvalidError(f"Invalid version {version!r}: give a number like 3 or 'v3'.")
            fn._version = int(text)
        return fn

    def hydrate(self) -> Function:
        """Resolve now what is otherwise resolved on first use (the lookup of a deployed function)."""
        run_sync(self._resolve_fid())
        return self

    # --- local -------------------------------------------------------------------------------------
    def local(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function in this process, without a container."""
        if self._raw_f is None:
            raise ExecutionError(
                "The definition for this Function is missing, so it is not possible to invoke it locally."
            )
        return self._raw_f(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.local(*args, **kwargs)

    # --- checks ------------------------------------------------------------------------------------
    def _require_hydrated(self) -> str:
        if self._function_id is None:
            raise ExecutionError(
                "Function has not been hydrated with the metadata it needs to run on Homeport, because the "
                "App it is defined on is not running. Call it inside `with app.run():` or run the program "
                "with `homeport run`."
            )
        return self._function_id

    async def _resolve_fid(self) -> str:
        check_not_importing(self._tag)
        if self._function_id is None and in_container():
            self._function_id = await lookup_in_own_app(self._tag)
        return self._require_hydrated()

    def _check_not_web(self, how: str) -> None:
        if self._web is not None:
            raise webhook_call_error(how, self._tag, self._web_url)

    def _check_not_generator(self, how: str) -> None:
        self._check_not_web(how)
        if self._is_generator:
            if how == "spawn":
                raise InvalidError("Cannot `spawn` a generator function.")
            raise InvalidError(
                f"A generator function cannot be called with `.{how}(...)`. Use `.remote_gen(...)` instead."
            )

    # --- unary -------------------------------------------------------------------------------------
    async def _remote(self, *args: Any, **kwargs: Any) -> Any:
        self._check_not_web("remote")
        fid = await self._resolve_fid()  # first: a looked-up function learns here whether it generates
        self._check_not_generator("remote")
        data = serialize_args(self._tag, args, kwargs)
        client = await get_client()
        call_id = _new_call_id()
        fut = asyncio.get_running_loop().create_future()

        def on_output(kind: str, items: list) -> None:
            if fut.done():
                return
            if kind == "closed":
                fut.set_exception(connection_lost())
            else:
                fut.set_result(items[0])

        client.watch_call(call_id, on_output)
        try:
            client.send(P.Call(call=call_id, fid=fid, kind=P.KIND_UNARY, inputs=[P.CallInput(0, data, self._method)]))
            output = await fut
            status, out = output.status, output.data
        except asyncio.CancelledError:
            client.send(P.CallCancel(call=call_id, id=0))
            raise
        finally:
            client.unwatch_call(call_id)
        return decode_output(self._tag, status, out)

    async def _spawn(self, *args: Any, **kwargs: Any) -> FunctionCall:
        self._check_not_web("spawn")
        fid = await self._resolve_fid()
        self._check_not_generator("spawn")
        data = serialize_args(self._tag, args, kwargs)
        client = await get_client()
        call_id = _new_call_id()
        await client.request(P.Call(call=call_id, fid=fid, kind=P.KIND_SPAWN, inputs=[P.CallInput(0, data, self._method)]))
        return FunctionCall(call_id, self._tag)

    # --- generators --------------------------------------------------------------------------------
    async def _gen_start(self, args: tuple, kwargs: dict, put) -> tuple[Client, str]:
        self._check_not_web("remote_gen")
        fid = await self._resolve_fid()
        if not self._is_generator:
            raise InvalidError(
                "A non-generator function cannot be called with `.remote_gen(...)`. Use `.remote(...)` instead."
            )
        data = serialize_args(self._tag, args, kwargs)
        client = await get_client()
        call_id = _new_call_id()
        client.watch_call(call_id, put)
        client.send(P.Call(call=call_id, fid=fid, kind=P.KIND_GENERATOR, inputs=[P.CallInput(0, data, self._method)]))
        return client, call_id

    def _gen_events(self, kind: str, items: list) -> Iterator[tuple[bool, Any]]:
        """(done, value) pairs from one message of a generator call."""
        if kind == "closed":
            raise connection_lost()
        if kind == P.GEN_ITEMS:
            for data in items:
                yield False, decode_output(self._tag, P.SUCCESS, data)
            return
        for out in items:
            if out.status != P.GENERATOR_DONE:
                raise output_error(self._tag, out.status, out.data)
            yield True, None

    async def _remote_gen(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """`f.remote_gen(...)`: the items of a generator call, as they come (on the bridge loop)."""
        q: asyncio.Queue = asyncio.Queue()
        client, call_id = await self._gen_start(args, kwargs, lambda k, items: q.put_nowait((k, items)))
        finished = False
        try:
            while True:
                kind, items = await q.get()
                for done, value in self._gen_events(kind, items):
                    if done:
                        finished = True
                        return
                    yield value
        finally:
            client.unwatch_call(call_id)
            if not finished:
                bridge_loop().call_soon_threadsafe(client.send, P.CallCancel(call=call_id, id=0))

    # --- map ---------------------------------------------------------------------------------------
    def _map_sync(self, inputs: Iterable[tuple[tuple, dict]], order: bool, return_exceptions: bool) -> Iterator[Any]:
        self._check_not_web("map")
        fid = run_sync(self._resolve_fid())
        self._check_not_generator("map")
        run = MapRun(self, fid, _new_call_id(), order, return_exceptions)
        run.start(run_sync(get_client()), lambda k, items: run.outq.put((k, items)))
        return run.iterate_sync(iter(inputs))

    async def _map_async(self, iterables: tuple, kwargs: dict, star: bool, order: bool,
                         return_exceptions: bool) -> AsyncIterator[Any]:
        self._check_not_web("map")
        fid = await run_async(self._resolve_fid())
        self._check_not_generator("map")
        loop = asyncio.get_running_loop()
        run = MapRun(self, fid, _new_call_id(), order, return_exceptions)
        aq: asyncio.Queue = asyncio.Queue()
        run.start(await run_async(get_client()), lambda k, items: loop.call_soon_threadsafe(aq.put_nowait, (k, items)))
        async for value in run.iterate_async(aiter_inputs(iterables, kwargs, star), aq):
            yield value


def in_container() -> bool:
    return _context.container is not None


def check_not_importing(tag: str) -> None:
    """Refuse a call made while a container imports the user's module: that code runs in every
    container of the app, so each new container would call again while starting and none would ever
    get to serve (a silent deadlock until `startup_timeout`)."""
    if _context.loading_user_code:
        raise ExecutionError(
            f"'{tag}' was called while a container was importing its module. Module-level code runs in "
            "every container of the app, so each new container would call it again while starting and "
            "none would get to serve. Move the call under `if __name__ == \"__main__\":`, into a "
            "`@app.local_entrypoint()`, or into a function body."
        )


async def lookup_in_own_app(tag: str) -> str:
    """Inside a container: the id of another function (or class) of the app this container serves."""
    assert _context.container is not None
    client = await get_client()
    found = await client.request(P.FunctionLookup(app="", app_id=_context.container[2], name=tag))
    return found["fid"]


async def _own_web_url(tag: str) -> str | None:
    assert _context.container is not None
    client = await get_client()
    found = await client.request(P.FunctionLookup(app="", app_id=_context.container[2], name=tag))
    return found.get("web_url")


class _DeployedFunction(Function):
    """`Function.from_name(app, name)`: resolved against the control plane on first use, and again
    after a redeploy replaced the version it knew."""

    def __init__(self, app_name: str, name: str, method: str | None = None, lookup_name: str | None = None) -> None:
        super().__init__(None, None, name, None, is_generator=False, method=method)
        self._app_name = app_name
        self._lookup_name = lookup_name or name
        self._info: dict[str, Any] = {}
        self._version: int | None = None  # `from_name(..., version=)`: that deployed version, else the latest

    def __repr__(self) -> str:
        return f"Function.from_name({self._app_name!r}, {self._lookup_name!r})"

    async def _resolve_fid(self) -> str:
        check_not_importing(self._tag)
        if self._function_id is None:
            from .exception import NotFoundError

            client = await get_client()
            try:
                found = await client.request(P.FunctionLookup(app=self._app_name, name=self._lookup_name,
                                                              version=getattr(self, "_version", None)))
            except NotFoundError:
                raise
            self._function_id = found["fid"]
            self._info = found.get("info") or {}
            if found.get("web"):
                self._web, self._web_url = {"type": "web"}, found.get("web_url")
            if self._method is None:
                self._is_generator = bool(found["is_generator"])
            else:
                self._is_generator = bool((self._info.get("methods") or {}).get(self._method, {}).get("is_generator"))
        return self._function_id


    @property
    def web_url(self) -> str | None:
        """The URL of a deployed web endpoint (looked up now if it was not yet)."""
        run_sync(self._resolve_fid())
        return self._web_url

    def get_web_url(self) -> str | None:
        return self.web_url


def is_generator_function(f: Any) -> bool:
    return inspect.isgeneratorfunction(f) or inspect.isasyncgenfunction(f)
