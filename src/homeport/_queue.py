"""`Queue`: distributed FIFO queues with partitions, kept by the control plane.

```python
with modal.Queue.ephemeral() as q:
    q.put(1)
    q.put_many([2, 3], partition="jobs")
    q.get()                               # 1
    q.get_many(10, partition="jobs")      # [2, 3]
    q.get(timeout=0.5)                    # raises queue.Empty
```

A blocking `get` waits on the control plane, which answers as soon as an item is put (or when the
timeout passes): nothing polls. Limits are Modal's (`homeport.server.dictqueue`): 100,000 partitions,
5,000 items and 64 MiB per partition, 1 MiB per item; a partition is cleared `partition_ttl` seconds
(24 h by default) after its last put.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import secrets
import time
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

from . import _pickle
from . import _protocol as P
from ._bridge import submit
from ._protocol import dictqueue as D
from ._stored_object import KIND_QUEUE, StoredObject, _BlockingFirst, aio_generator, blocking_method, register
from .exception import (
    DeserializationError,
    InvalidError,
    RequestSizeError,
    ResourceExhaustedError,
    SerializationError,
)

__all__ = ["Queue"]

ITEM_MAX_BYTES = 1 << 20
_REQUEST_WAIT = 50.0  # one request waits at most this long on the control plane; longer waits ask again


def _dumps(value: Any) -> bytes:
    try:
        return _pickle.dumps(value)
    except Exception as exc:
        raise SerializationError(f"Cannot pickle the Queue item {value!r}: {exc}") from exc


def _loads(blob: bytes) -> Any:
    try:
        return _pickle.loads(blob)
    except Exception as exc:
        raise DeserializationError(
            f"Cannot unpickle an item of this Queue ({type(exc).__name__}: {exc}); is the library that defines "
            "its type installed here?"
        ) from exc


class _GetWithAio(_BlockingFirst):
    """A get's `.aio`: it runs on the bridge loop, and when its caller gives up (cancelled, say by
    `asyncio.wait_for`) the bridge's task may already have had its answer, which nobody would use: the
    caller's side tells the control plane too, which then puts back what that get took."""

    __slots__ = ("_queue",)

    def __init__(self, queue: Queue, impl: Callable[..., Any], name: str) -> None:
        super().__init__(impl, name)
        self._queue = queue

    async def aio(self, *args: Any, **kwargs: Any) -> Any:
        waits: list[tuple[str, bytes]] = []
        try:
            return await asyncio.wrap_future(submit(self._impl(*args, _waits=waits, **kwargs)))
        except asyncio.CancelledError:
            if waits:  # after the get's own request, on the same connection
                submit(self._queue._cancel_waits(waits))
            raise


def _blocking_get(impl: Callable[..., Any]) -> Any:
    class _Descriptor:
        def __get__(self, obj: Any, objtype: Any = None) -> Any:
            if obj is None:
                return self
            return _GetWithAio(obj, functools.partial(impl, obj), impl.__name__)

    return _Descriptor()


@register
class Queue(StoredObject):
    """A distributed FIFO queue, shared by the client and every container that uses it."""

    _kind = KIND_QUEUE
    _label = "Queue"
    __slots__ = ()

    @staticmethod
    def validate_partition_key(partition: str | None) -> bytes:
        if partition is not None:
            key = partition.encode("utf-8")
            if len(key) == 0 or len(key) > 64:
                raise InvalidError("Queue partition key must be between 1 and 64 characters.")
            return key
        return b""

    async def _wait_op(self, op: Callable[..., D.Operation], wait: float, partition: bytes,
                       waits: list[tuple[str, bytes]] | None = None, **fields: Any) -> Any:
        """A request that may wait on the control plane. If it is cancelled here (`asyncio` cancellation,
        Ctrl-C), the control plane is told, so that it does not take items for nobody (or put later).
        `waits`: where the caller's side notes the wait ids it may have to cancel itself."""
        wait_id = secrets.token_hex(12)
        if waits is not None:
            waits.append((wait_id, partition))
        try:
            return await self._op(op, timeout=wait + 30, partition=partition, wait=wait, wait_id=wait_id, **fields)
        except asyncio.CancelledError:
            self._send_cancel(wait_id, partition)
            raise

    def _send_cancel(self, wait_id: str, partition: bytes) -> None:
        # Sent at once, not from a task of its own: it must reach the control plane before whatever
        # this process sends next (a put the cancelled get must not take). Its answer is not awaited.
        from ._client import Client

        client = Client._instance
        if client is not None and not client.closed:
            with contextlib.suppress(Exception):
                cancel = D.QueueCancelWait(oid=self._object_id or "", partition=partition, wait_id=wait_id)
                client.send(P.QueueOp(id=next(client._ids), **D.fields_of(cancel)))

    async def _cancel_waits(self, waits: list[tuple[str, bytes]]) -> None:
        for wait_id, partition in waits[-1:]:
            self._send_cancel(wait_id, partition)

    # --- getting -----------------------------------------------------------------------------------
    async def _get(self, n: int, block: bool, timeout: float | None, partition: str | None,
                   waits: list[tuple[str, bytes]] | None = None) -> list[Any]:
        key = self.validate_partition_key(partition)
        if not block:
            if timeout is not None:
                warnings.warn("Timeout is ignored for non-blocking get.", stacklevel=3)
            return [_loads(v) for v in await self._op(D.QueueGet, partition=key, n=n, timeout=0)]
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = _REQUEST_WAIT if deadline is None else max(0.0, min(_REQUEST_WAIT, deadline - time.monotonic()))
            values = await self._wait_op(D.QueueGet, wait, key, waits, n=n)
            if values:
                return [_loads(v) for v in values]
            if deadline is not None and time.monotonic() >= deadline:
                raise queue.Empty()

    @_blocking_get
    async def get(self, block: bool = True, timeout: float | None = None, *, partition: str | None = None,
                  _waits: list[tuple[str, bytes]] | None = None) -> Any:
        """Remove and return the next item. Blocking (the default), wait for one — up to `timeout`
        seconds, then raise `queue.Empty`; with `block=False`, return None when the queue is empty."""
        values = await self._get(1, block, timeout, partition, _waits)
        return values[0] if values else None

    @_blocking_get
    async def get_many(
        self, n_values: int, block: bool = True, timeout: float | None = None, *, partition: str | None = None,
        _waits: list[tuple[str, bytes]] | None = None,
    ) -> list[Any]:
        """Remove and return up to `n_values` items; blocking, wait until there is at least one."""
        if isinstance(n_values, bool) or not isinstance(n_values, int) or n_values < 1:
            raise InvalidError(f"n_values must be a positive integer, not {n_values!r}")
        return await self._get(n_values, block, timeout, partition, _waits)

    # --- putting -----------------------------------------------------------------------------------
    async def _put(
        self, values: list[Any], block: bool, timeout: float | None, partition: str | None, partition_ttl: int,
        method: str,
    ) -> None:
        key = self.validate_partition_key(partition)
        blobs = [_dumps(v) for v in values]
        if any(len(b) > ITEM_MAX_BYTES for b in blobs):
            raise RequestSizeError(f"Queue.{method} request is too large")
        if not block:
            if timeout is not None:
                warnings.warn("`timeout` argument is ignored for non-blocking put.", stacklevel=3)
            timeout = 0
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = _REQUEST_WAIT if deadline is None else max(0.0, min(_REQUEST_WAIT, deadline - time.monotonic()))
            try:
                await self._wait_op(D.QueuePut, wait, key, values=blobs, partition_ttl=partition_ttl)
                return
            except ResourceExhaustedError as exc:
                if deadline is not None and time.monotonic() >= deadline:
                    raise queue.Full(str(exc)) from None

    @blocking_method
    async def put(
        self, v: Any, block: bool = True, timeout: float | None = None, *, partition: str | None = None,
        partition_ttl: int = 24 * 3600,
    ) -> None:
        """Add `v` at the end of the queue. When the partition is full, wait for room (up to `timeout`
        seconds) and then raise `queue.Full`; with `block=False`, raise `queue.Full` at once."""
        await self._put([v], block, timeout, partition, partition_ttl, "put")

    @blocking_method
    async def put_many(
        self, vs: list[Any], block: bool = True, timeout: float | None = None, *, partition: str | None = None,
        partition_ttl: int = 24 * 3600,
    ) -> None:
        """Add several items at once (all or none)."""
        await self._put(list(vs), block, timeout, partition, partition_ttl, "put_many")

    # --- the rest ----------------------------------------------------------------------------------
    @blocking_method
    async def len(self, *, partition: str | None = None, total: bool = False) -> int:
        """The number of items in a partition, or in all of them with `total=True`."""
        if partition and total:
            raise InvalidError("Partition must be null when requesting total length.")
        return int(await self._op(D.QueueLen, partition=self.validate_partition_key(partition), total=bool(total)))

    @blocking_method
    async def clear(self, *, partition: str | None = None, all: bool = False) -> None:
        """Remove every item of a partition, or of all of them with `all=True`."""
        if partition and all:
            raise InvalidError("Partition must be null when requesting to clear all.")
        await self._op(D.QueueClear, partition=self.validate_partition_key(partition), all=bool(all))

    @aio_generator
    async def iterate(self, *, partition: str | None = None, item_poll_timeout: float = 0.0) -> AsyncIterator[Any]:
        """The items of a partition, oldest first, without removing them; after the last one, wait up to
        `item_poll_timeout` seconds for more."""
        key = self.validate_partition_key(partition)
        after = 0
        deadline = time.monotonic() + item_poll_timeout
        while True:
            wait = max(0.0, min(_REQUEST_WAIT, deadline - time.monotonic()))
            items = await self._op(D.QueueNext, timeout=wait + 30, partition=key, after=after, wait=wait)
            if items:
                for seq, value in items:
                    after = seq
                    yield _loads(value)
                deadline = time.monotonic() + item_poll_timeout
            elif time.monotonic() >= deadline:
                return
