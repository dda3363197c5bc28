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
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from .. import _protocol as P
from ._run import Host, Run, Shutdown, call_input, dumps_result, run_one, send_item


class Container(Host, Protocol):
    """What the concurrent loop needs of the container (`_runtime.Runtime`)."""

    max_inputs: int
    cancelled: set[int]
    _loop: asyncio.AbstractEventLoop | None
    _async_sink: Callable[[Any], object] | None

    def reader(self) -> None: ...

    def _flush(self, outputs: list, release: list[int] | None = None, leaving: bool = False) -> None: ...


class _Replace(Exception):
    """A sync input timed out: leave after handing back what this container still holds."""


def serve_concurrent(rt: Container) -> None:
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
    def __init__(self, rt: Container, loop: asyncio.AbstractEventLoop) -> None:
        self.rt = rt
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()
        self.slots = asyncio.Semaphore(rt.max_inputs)
        self.executor = ThreadPoolExecutor(rt.max_inputs, thread_name_prefix="homeport-input")
        self.tasks: dict[int, asyncio.Task] = {}
        self.waiting: dict[int, P.InputRow] = {}  # received, not started yet (waiting for a slot)
        self.outputs: list[P.OutputRow] = []
        self.flush_scheduled = False
        self.replace = False

    def on_message(self, msg: P.ToContainer | None) -> None:
        if msg is None:
            self.queue.put_nowait(None)
        elif type(msg) is P.Inputs:
            for item in msg.items:
                self.waiting[item.iid] = item
            self.queue.put_nowait(msg.items)
        elif type(msg) is P.Cancel:
            ids = set(msg.ids)
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
                iid = item.iid
                if self.replace:
                    break
                if iid in self.rt.cancelled:
                    self.waiting.pop(iid, None)
                    self.output(P.OutputRow(iid, P.TERMINATED, None))
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
                back += [it.iid for it in more or ()]
            self._flush()
            self.rt._flush([], release=sorted(set(back)), leaving=True)
            raise Shutdown()
        if self.tasks:
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        self._flush()

    def _done(self, iid: int, _task: object = None) -> None:
        self.tasks.pop(iid, None)
        self.slots.release()

    def output(self, out: P.OutputRow) -> None:
        self.outputs.append(out)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.outputs:
            outputs, self.outputs = self.outputs, []
            self.rt._flush(outputs)

    async def run_input(self, item: P.InputRow) -> None:
        """Run one input: an async function as a task of this loop, a sync one in a worker thread (which
        runs it as the plain loop does); past `timeout` either fails with `FunctionTimeoutError`."""
        rt = self.rt
        iid = item.iid
        # This task's own input context (`Run` sets it), copied into its worker thread below.
        with Run(rt, [item], cpu=False, timed_out=asyncio.TimeoutError, cancelled=asyncio.CancelledError) as run:
            fn = run.function()
            if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
                args, kwargs = run.args()
                result = fn(*args, **kwargs)
                if inspect.isasyncgen(result):
                    run.done(P.GENERATOR_DONE, await asyncio.wait_for(self._stream_async(iid, result), rt.timeout))
                else:
                    run.done(P.SUCCESS, dumps_result(rt.tag, await asyncio.wait_for(result, rt.timeout)))
            else:
                ctx = contextvars.copy_context()
                fut = self.loop.run_in_executor(self.executor, ctx.run, run_one, rt, [item], self._call_sync)
                try:
                    row = (await asyncio.wait_for(asyncio.shield(fut), rt.timeout))[0]
                except asyncio.TimeoutError:
                    self.replace = True  # the thread cannot be stopped: this container must go
                    self.slots.release()  # wake the intake loop, wherever it waits, so that it notices
                    self.queue.put_nowait(())
                    raise
                run.done(row.status, row.data)
        if iid in rt.cancelled:
            run.done(P.TERMINATED, None)
        self.output(run.rows()[0])

    def _call_sync(self, run: Run) -> None:
        """In a worker thread: run a sync function (or drain a sync generator); an awaitable it returns
        runs on the loop, the thread waiting for it."""
        call_input(self.rt, run, self._await_on_loop)

    def _await_on_loop(self, awaitable: Any) -> Any:
        async def wait() -> Any:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wait(), self.loop).result()

    async def _stream_async(self, iid: int, gen: Any) -> int:
        count = 0
        async for value in gen:
            send_item(self.rt, iid, value)
            count += 1
        return count

