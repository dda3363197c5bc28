"""`FunctionCall`: the handle `.spawn()` gives back, and `FunctionCall.from_id(id)` from any process."""

from __future__ import annotations

import asyncio
from typing import Any

from . import _protocol as P
from ._bridge import MethodWithAio, run_sync
from ._client import get_client
from ._serialization import decode_output
from ._syncchan import SpawnAck, unacknowledged


class _AcceptedFirst(MethodWithAio):
    """A method of a `FunctionCall` that, called blocking, first waits in the calling thread for the
    spawn's acceptance when it may still be unread (`.aio` waits on a worker thread, in `_accepted`)."""

    __slots__ = ("_call",)

    def __init__(self, call: FunctionCall, impl: Any, name: str) -> None:
        super().__init__(impl, name)
        self._call = call

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ack = self._call._ack or unacknowledged(self._call.object_id)
        if ack is not None:
            ack.wait()  # raises the spawn's refusal
        return super().__call__(*args, **kwargs)


class FunctionCall:
    """A handle on a spawned call; `FunctionCall.from_id(id)` works from any process.

    ```python
    call = square.spawn(4)
    assert call.get(timeout=10) == 16
    ```
    """

    def __init__(self, call_id: str, tag: str | None = None) -> None:
        self.object_id = call_id
        self._tag = tag or call_id
        self._ack: SpawnAck | None = None  # a pipelined spawn's acceptance, while it may be unread
        self.get = _AcceptedFirst(self, self._get, "get")
        self.cancel = _AcceptedFirst(self, self._cancel, "cancel")

    async def _accepted(self) -> None:
        """A spawn of this process not yet acknowledged: wait for its acceptance (raises its refusal)."""
        ack = self._ack or unacknowledged(self.object_id)
        if ack is None:
            return
        if not ack.done:  # read on a worker thread: the event loop goes on meanwhile
            await asyncio.get_running_loop().run_in_executor(None, ack.wait)
        ack.wait()  # answered: raises a refusal
        if ack.error is None:
            self._ack = None

    def __repr__(self) -> str:
        return f"FunctionCall({self.object_id!r})"

    @classmethod
    def from_id(cls, function_call_id: str, client: Any = None) -> FunctionCall:
        return cls(function_call_id)

    async def _get(self, timeout: float | None = None, *, index: int = 0) -> Any:
        await self._accepted()
        client = await get_client()
        reply = await client.request(
            P.CallGet(call=self.object_id, timeout=timeout),
            timeout=None if timeout is None else timeout + 30,
        )
        if reply is None:
            raise TimeoutError(f"The call {self.object_id} did not finish within {timeout} s.")
        return decode_output(self._tag, reply["status"], reply["data"])

    async def _cancel(self, terminate_containers: bool = False) -> None:
        await self._accepted()
        client = await get_client()
        await client.request(P.CallCancel(call=self.object_id))

    @staticmethod
    def gather(*calls: FunctionCall) -> list[Any]:
        """The results of `calls`, in their order, waited for together (at most `GATHER_AT_ONCE` requests
        in flight); the first call that failed raises its error, and the waits not done are dropped."""
        for c in calls:  # spawns of this thread still unacknowledged: read here, not on the event loop
            if c._ack is not None:
                c._ack.wait()
        return run_sync(_gather(calls))


GATHER_AT_ONCE = 1024


async def _gather(calls: tuple[FunctionCall, ...]) -> list[Any]:
    slots = asyncio.Semaphore(GATHER_AT_ONCE)

    async def one(call: FunctionCall) -> Any:
        async with slots:
            return await call._get()

    tasks = [asyncio.ensure_future(one(c)) for c in calls]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
