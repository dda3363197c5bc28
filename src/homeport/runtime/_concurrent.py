"""Input concurrency (`@modal.concurrent(max_inputs=N)`): one container runs up to N inputs at once.

The main thread runs an event loop. Async functions run as tasks on it; sync functions run in a pool of
N threads. The reader thread hands messages to the loop. Outputs finished in the same loop iteration
go back in one message.

Timeouts: an async input that runs too long is cancelled and fails with `FunctionTimeoutError`; the
container goes on. A thread cannot be interrupted, so a sync input that runs too long fails the same
way, and the container then hands back every other input it holds (the control plane runs them
elsewhere) and leaves, so no stuck thread keeps a slot.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import cloudpickle

from .. import _protocol as P

if TYPE_CHECKING:
    from ._runtime import Runtime


class _Replace(Exception):
    """A sync input timed out: leave after handing back what this container still holds."""


def serve_concurrent(rt: Runtime) -> None:
    import threading

    loop = rt._loop or asyncio.new_event_loop()
    rt._loop = loop
    asyncio.set_event_loop(loop)
    server = _ConcurrentServer(rt, loop)
    rt._async_sink = lambda msg: loop.call_soon_threadsafe(server.on_message, msg)
    threading.Thread(target=rt.reader, name="homeport-reader", daemon=True).start()
    try:
        loop.run_until_complete(server.run())
    finally:
        server.executor.shutdown(wait=False, cancel_futures=True)


class _ConcurrentServer:
    def __init__(self, rt: Runtime, loop: asyncio.AbstractEventLoop) -> None:
        self.rt = rt
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()
        self.slots = asyncio.Semaphore(rt.max_inputs)
        self.executor = ThreadPoolExecutor(rt.max_inputs, thread_name_prefix="homeport-input")
        self.tasks: dict[int, asyncio.Task] = {}
        self.waiting: dict[int, list[Any]] = {}  # received, not started yet (waiting for a slot)
        self.outputs: list[list[Any]] = []
        self.flush_scheduled = False
        self.replace = False

    def on_message(self, msg: dict[str, Any] | None) -> None:
        if msg is None:
            self.queue.put_nowait(None)
        elif msg["t"] == P.INPUTS:
            for item in msg["items"]:
                self.waiting[item[0]] = item
            self.queue.put_nowait(msg["items"])
        elif msg["t"] == P.CANCEL:
            ids = set(msg["ids"])
            self.rt.cancelled |= ids
            for iid in ids:
                task = self.tasks.get(iid)
                if task is not None:
                    task.cancel()

    async def run(self) -> None:
        while not self.replace:
            items = await self.queue.get()
            if items is None or self.replace:
                break
            for item in items:
                iid = item[0]
                if self.replace:
                    break
                if iid in self.rt.cancelled:
                    self.waiting.pop(iid, None)
                    self.output([iid, P.TERMINATED, None, 0.0])
                    continue
                await self.slots.acquire()
                if self.replace:
                    self.slots.release()
                    break
                self.waiting.pop(iid, None)
                task = self.loop.create_task(self.run_input(item))
                self.tasks[iid] = task
                task.add_done_callback(functools.partial(self._done, iid))
        if self.replace:
            # Hand back what has not finished, including inputs running in other threads, then leave.
            back = list(self.waiting) + [iid for iid, t in self.tasks.items() if not t.done()]
            while not self.queue.empty():
                more = self.queue.get_nowait()
                back += [it[0] for it in more or ()]
            self._flush()
            self.rt._flush([], release=sorted(set(back)), leaving=True)
            from ._runtime import _Shutdown

            raise _Shutdown()
        if self.tasks:
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        self._flush()

    def _done(self, iid: int, _task: object = None) -> None:
        self.tasks.pop(iid, None)
        self.slots.release()

    def output(self, out: list[Any]) -> None:
        self.outputs.append(out)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.outputs:
            outputs, self.outputs = self.outputs, []
            self.rt._flush(outputs)

    async def run_input(self, item: list[Any]) -> None:
        rt = self.rt
        iid, args_data, method = item[0], item[1], item[2]
        t0 = time.monotonic()
        from ._runtime import set_input_context

        set_input_context(item)  # this task's own context; copied into its worker thread below
        status: int
        data: Any
        assert rt.service is not None  # inputs arrive only after start() loaded it
        try:
            fn = rt.service.callables[method]
            args, kwargs = cloudpickle.loads(args_data)
            if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
                result = fn(*args, **kwargs)
                if inspect.isasyncgen(result):
                    status, data = P.GENERATOR_DONE, await asyncio.wait_for(self._stream_async(iid, result), rt.timeout)
                else:
                    status, data = P.SUCCESS, rt._dumps_result(await asyncio.wait_for(result, rt.timeout))
            else:
                ctx = contextvars.copy_context()
                fut = self.loop.run_in_executor(self.executor, ctx.run, self._call_sync, fn, iid, args, kwargs)
                try:
                    status, data = await asyncio.wait_for(asyncio.shield(fut), rt.timeout)
                except asyncio.TimeoutError:
                    self.replace = True  # the thread cannot be stopped: this container must go
                    self.slots.release()  # wake the intake loop, wherever it waits, so that it notices
                    self.queue.put_nowait(())
                    raise
        except asyncio.TimeoutError:
            from homeport.exception import FunctionTimeoutError

            exc = FunctionTimeoutError(
                f"Function '{rt.tag}' timed out after {rt.timeout:g}s (timeout={rt.timeout:g}). "
                "Raise `timeout` in the decorator if the input needs longer."
            )
            status, data = P.TIMEOUT, P.failure(cloudpickle.dumps(exc), repr(exc), "")
        except asyncio.CancelledError:
            status, data = P.TERMINATED, None
        except Exception as exc:
            from ._runtime import _failure, print_failure

            print_failure(exc)
            status, data = P.FAILURE, _failure(exc)
        if iid in rt.cancelled:
            status, data = P.TERMINATED, None
        self.output([iid, status, data, time.monotonic() - t0])

    def _call_sync(self, fn: Any, iid: int, args: tuple, kwargs: dict) -> tuple[int, Any]:
        """In a worker thread: run a sync function (or drain a sync generator)."""
        rt = self.rt
        try:
            result = fn(*args, **kwargs)
            if inspect.isgenerator(result):
                count = 0
                for value in result:
                    rt.conn.send({"t": P.CONTAINER_GEN, "input": iid, "items": [rt._dumps_result(value)]})
                    count += 1
                return P.GENERATOR_DONE, count
            return P.SUCCESS, rt._dumps_result(result)
        except Exception as exc:
            from ._runtime import _failure, print_failure

            print_failure(exc)
            return P.FAILURE, _failure(exc)

    async def _stream_async(self, iid: int, gen: Any) -> int:
        count = 0
        async for value in gen:
            self.rt.conn.send({"t": P.CONTAINER_GEN, "input": iid, "items": [self.rt._dumps_result(value)]})
            count += 1
        return count
