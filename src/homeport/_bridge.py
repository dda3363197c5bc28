"""One bridge between the blocking and the async API (the role `synchronicity` plays in modal-client).

Every SDK operation is written once as a coroutine that runs on a private event loop in a daemon
thread. `run_sync` blocks on it; `run_async` awaits it from any other event loop. A streaming operation
is written once as an async generator on that loop: `iterate_sync` / `iterate_async` carry its items to
the caller (`GeneratorWithAio`: `obj.m(...)` iterates, `obj.m.aio(...)` is an async iterator). Users'
iterators and callbacks never run on the bridge thread.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import functools
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

from ._wire import new_event_loop

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def bridge_loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread
    if _loop is not None:
        return _loop
    with _lock:
        if _loop is None:
            loop = new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            _thread = threading.Thread(target=run, name="homeport-bridge", daemon=True)
            _thread.start()
            ready.wait()
            _loop = loop
    return _loop


def _stop_at_exit() -> None:
    """Stop the bridge loop and wait for its thread before the interpreter finalizes. A loop left running
    in a daemon thread can wake then (a connection closed under it) and call into an interpreter that is
    being torn down: uvloop's crashes the process as it exits (seen: SIGSEGV in `homeport run` when the
    control plane stopped during its call). A Homeport call made later still (another exit handler)
    starts a new loop."""
    global _loop, _thread
    with _lock:
        loop, thread = _loop, _thread
        _loop = _thread = None
    if loop is None or thread is None:
        return
    try:
        loop.call_soon_threadsafe(loop.stop)
    except RuntimeError:  # closed already
        return
    thread.join(timeout=2)


# Registered at import: exit handlers run last-registered first, so this one runs after those of the
# modules imported later (the user's among them), which may still make Homeport calls.
atexit.register(_stop_at_exit)


def in_bridge_thread() -> bool:
    return _thread is not None and threading.current_thread() is _thread


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    return asyncio.run_coroutine_threadsafe(coro, bridge_loop())


# False while a detached app runs (`run --detach`): Ctrl-C leaves what the client started running, as
# Modal's does, rather than cancel the call it was waiting for.
interrupt_cancels = True


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    if in_bridge_thread():
        coro.close()
        raise RuntimeError("blocking Homeport call made on the bridge thread")
    fut = submit(coro)
    try:
        return fut.result()
    except KeyboardInterrupt:
        if interrupt_cancels:
            fut.cancel()
        raise


async def run_async(coro: Coroutine[Any, Any, T]) -> T:
    if asyncio.get_running_loop() is _loop:
        return await coro
    return await asyncio.wrap_future(submit(coro))


class MethodWithAio:
    """`obj.method(...)` blocks; `await obj.method.aio(...)` does not. Both run one coroutine."""

    __slots__ = ("__name__", "_impl")

    def __init__(self, impl: Callable[..., Coroutine[Any, Any, Any]], name: str | None = None) -> None:
        self._impl = impl
        self.__name__ = name or impl.__name__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return run_sync(self._impl(*args, **kwargs))

    async def aio(self, *args: Any, **kwargs: Any) -> Any:
        return await run_async(self._impl(*args, **kwargs))


def aio_method(impl: Callable[..., Coroutine[Any, Any, Any]]) -> Any:
    """Decorator for an `async def` method: exposes it as a blocking method with an `.aio` variant."""

    class _Descriptor:
        def __set_name__(self, owner, name):
            self.name = name

        def __get__(self, obj, objtype=None):
            if obj is None:
                return self
            return MethodWithAio(functools.partial(impl, obj), impl.__name__)

    return _Descriptor()


async def _anext(agen: AsyncIterator[T]) -> T:
    return await agen.__anext__()


def iterate_sync(agen: Any) -> Iterator[Any]:
    """The items of an async generator that runs on the bridge loop, to a blocking caller (one hop each);
    closing this iterator closes the generator there."""
    try:
        while True:
            try:
                item = run_sync(_anext(agen))
            except StopAsyncIteration:
                return
            yield item
    finally:
        run_sync(agen.aclose())


async def iterate_async(agen: Any) -> AsyncIterator[Any]:
    """The items of an async generator that runs on the bridge loop, to a caller on another event loop."""
    try:
        while True:
            try:
                item = await run_async(_anext(agen))
            except StopAsyncIteration:
                return
            yield item
    finally:
        await run_async(agen.aclose())


class GeneratorWithAio:
    """`obj.m(...)` iterates; `obj.m.aio(...)` is an async iterator. Both carry one async generator."""

    __slots__ = ("__name__", "_impl")

    def __init__(self, impl: Callable[..., Any], name: str) -> None:
        self._impl = impl
        self.__name__ = name

    def __call__(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        return iterate_sync(self._impl(*args, **kwargs))

    def aio(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        return iterate_async(self._impl(*args, **kwargs))
