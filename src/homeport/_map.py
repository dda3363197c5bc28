"""`.map()`, `.starmap()` and `.for_each()`: inputs go out in chunks, outputs come back in chunks and are
reordered.

Consecutive inputs with small arguments travel as one chunk row (`P.CallInput` whose `args` is a list,
each input pickled on its own): the control plane cuts it into the chunks it schedules, or into single
inputs (see `server.calls`), and each input is still run, retried, timed out and reported on its own.
An input whose pickled arguments are big travels alone.
"""

from __future__ import annotations

import asyncio
import itertools
import pickle
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from . import _pickle, _progress
from . import _protocol as P
from ._bridge import bridge_loop
from ._serialization import decode_output, output_error, serialize_args
from ._session import connection_lost

if TYPE_CHECKING:
    from ._client import Client


class Mappable(Protocol):
    """What a map needs of the function it maps (`_function.Function`)."""

    _tag: str
    _method: str | None

    def _map_sync(self, inputs: Iterable[tuple[tuple, dict]], order: bool, return_exceptions: bool) -> Iterator[Any]: ...
    def _map_async(self, iterables: tuple, kwargs: dict, star: bool, order: bool,
                   return_exceptions: bool) -> AsyncIterator[Any]: ...

MAP_BATCH = 1024  # inputs per message
# A map's first message holds fewer inputs, and what follows is made but held back until its first output
# comes (at most `PROBE_WAIT` seconds): by then the control plane has timed the function's inputs in a
# chunk, and cuts the rest into chunks of the right size (see `server.calls`). Its time per input
# otherwise comes from single calls, which cost a container tens of microseconds more each: chunks of a
# few inputs. (On a loaded machine the first output of a trivial function takes 5-20 ms.)
HOLD_YIELD = 0.0002  # seconds between two messages it makes while it holds them back
WRITE_WAIT = 0.1  # at most, for the event loop to write a message (see `_send_piece`)
PROBE_INPUTS = 256
PROBE_WAIT = 0.025
MAP_MESSAGE_BYTES = 64 << 20  # pickled arguments per message, at most (one bigger argument goes alone)
MAP_WINDOW = 65536  # inputs in flight before the caller waits for outputs
CHUNK_ARG_BYTES = 16 << 10  # an input whose pickled arguments are bigger travels alone, not in a chunk
CHUNK_BYTES = 1 << 20  # pickled arguments per chunk row, at most


class MapMethod:
    def __init__(self, fn: Mappable, star: bool = False, for_each: bool = False) -> None:
        self._fn, self._star, self._for_each = fn, star, for_each

    def _inputs(self, iterables: tuple, kwargs: dict) -> Iterable[tuple[tuple, dict]]:
        if self._star:
            (it,) = iterables
            return ((tuple(args), kwargs) for args in it)
        return ((args, kwargs) for args in zip(*iterables))

    def __call__(self, *iterables: Any, kwargs: dict | None = None, order_outputs: bool = True,
                 return_exceptions: bool = False, ignore_exceptions: bool = False,
                 wrap_returned_exceptions: bool | None = None) -> Any:
        inputs = self._inputs(iterables, kwargs or {})
        if self._for_each:
            for _ in self._fn._map_sync(inputs, False, ignore_exceptions):
                pass
            return None
        return self._fn._map_sync(inputs, order_outputs, return_exceptions)

    def aio(self, *iterables: Any, kwargs: dict | None = None, order_outputs: bool = True,
            return_exceptions: bool = False, ignore_exceptions: bool = False,
            wrap_returned_exceptions: bool | None = None) -> Any:
        if self._for_each:
            async def drain() -> None:
                async for _ in self._fn._map_async(iterables, kwargs or {}, self._star, False, ignore_exceptions):
                    pass

            return drain()
        return self._fn._map_async(iterables, kwargs or {}, self._star, order_outputs, return_exceptions)


async def aiter_inputs(iterables: tuple, kwargs: dict, star: bool) -> AsyncIterator[tuple[tuple, dict]]:
    """Inputs of `.map.aio`, which accepts sync and async iterables alike."""
    its = []
    for it in iterables:
        its.append(it.__aiter__() if hasattr(it, "__aiter__") else _sync_to_async(it))
    while True:
        row = []
        for it in its:
            try:
                row.append(await it.__anext__())
            except StopAsyncIteration:
                return
        if star:
            yield tuple(row[0]), kwargs
        else:
            yield tuple(row), kwargs


async def _sync_to_async(it: Iterable) -> AsyncIterator:
    for x in it:
        yield x


def _row_bytes(item: P.CallInput) -> int:
    args = item.args
    return len(args) if isinstance(args, bytes) else sum(map(len, args))


class MapRun:
    """One `.map()` call: inputs go out in batches of chunk rows, outputs come back and are reordered."""

    def __init__(self, fn: Mappable, fid: str, call_id: str, order: bool, return_exceptions: bool) -> None:
        self.fn = fn
        self.fid = fid
        self.order = order
        self.return_exceptions = return_exceptions
        self.call_id = call_id
        self.outq: queue.SimpleQueue = queue.SimpleQueue()
        self.sent = 0
        self.received = 0
        self.next_idx = 0
        self.buffer: dict[int, tuple[int, Any]] = {}  # outputs that came before their turn, one by one
        self.runs: dict[int, tuple[list[int], list[Any]]] = {}  # and chunks' runs of them, by first index
        self.client: Client | None = None
        self.first = True
        self.closed = False
        self.exhausted = False  # every input was sent: the total is known
        self.want_bar = _progress.map_bars_wanted()
        self.from_thread = False  # iterated in a thread other than the event loop's (`iterate_sync`)
        self.bar: _progress.MapBar | None = None

    def start(self, client: Client, handler) -> None:
        self.client = client
        client.watch_call(self.call_id, handler)

    def _send(self, batch: list, last: bool) -> None:
        # A message stays far under the control plane's frame limit however big the arguments are.
        pieces: list[list] = [[]]
        size = 0
        for item in batch:
            n = _row_bytes(item)
            if pieces[-1] and size + n > MAP_MESSAGE_BYTES:
                pieces.append([])
                size = 0
            pieces[-1].append(item)
            size += n
        for k, piece in enumerate(pieces, 1):
            self._send_piece(piece, last and k == len(pieces))

    def _send_piece(self, batch: list, last: bool) -> None:
        msg: P.Call | P.MapPut
        if self.first:
            msg = P.Call(call=self.call_id, fid=self.fid, kind=P.KIND_MAP, inputs=batch, last=last)
            self.first = False
        else:
            msg = P.MapPut(call=self.call_id, inputs=batch, last=last)
        data = P.encode(msg)
        client = self.client
        assert client is not None and client.proto.transport is not None  # started, on a made connection
        write = client.proto.transport.write
        if not self.from_thread:
            bridge_loop().call_soon_threadsafe(write, data)
            return
        # From a thread of its own, the map waits until the event loop has written it: the loop's thread
        # would otherwise wait for the GIL while this one makes the next messages, up to the interpreter's
        # switch interval (5 ms) per hand-off, its outputs too (the first output, which times the
        # function's inputs, came 10-20 ms late).
        written = threading.Event()

        def write_it() -> None:
            try:
                write(data)
            finally:
                written.set()

        bridge_loop().call_soon_threadsafe(write_it)
        written.wait(WRITE_WAIT)

    def _batch(self, rows) -> list[P.CallInput]:
        """Rows of the next inputs: runs of small ones as chunks, a big one alone."""
        tag, method = self.fn._tag, self.fn._method
        batch: list[P.CallInput] = []
        chunk: list[Any] = []
        start = size = 0
        dumps, atoms = pickle.dumps, _pickle.ATOMS
        limit, alone, most = P.MAX_PAYLOAD_BYTES, CHUNK_ARG_BYTES, CHUNK_BYTES  # (locals: the hot loop)
        big, short, few = P.PLAIN_INT, P.PLAIN_ARG_BYTES, P.PLAIN_ARGS
        seen_kwargs: Any = None
        plain_kwargs = no_kwargs = False
        sent = self.sent
        try:  # (`self.sent` counted in a local: the hot loop)
            for args, kwargs in rows:
                if kwargs is not seen_kwargs:  # (a map passes the same `kwargs` to every input)
                    seen_kwargs, plain_kwargs = kwargs, _pickle.is_plain(kwargs)
                    no_kwargs = plain_kwargs and not kwargs
                if no_kwargs and len(args) <= few:
                    # The commonest case: plain positional values travel as themselves (see `P.CallInput`).
                    for a in args:
                        t = type(a)
                        if t is int:
                            if -big <= a < big:
                                continue
                        elif t is float or t is bool or a is None:
                            continue
                        elif ((t is str and a.isascii()) or t is bytes) and len(a) <= short:
                            continue
                        break
                    else:
                        if chunk and size + 64 > most:
                            batch.append(P.CallInput(start, chunk, method))
                            chunk = []
                        if not chunk:
                            start, size = sent, 0
                        chunk.append(args)
                        size += 64  # (about: `most` is a soft limit; a message holds at most `MAP_BATCH` inputs)
                        sent += 1
                        continue
                for a in args:  # plain values: pickled here (what `serialize_args` does)
                    if type(a) not in atoms:
                        data = serialize_args(tag, args, kwargs)
                        break
                else:
                    data = dumps((args, kwargs), 5) if plain_kwargs else serialize_args(tag, args, kwargs)
                n = len(data)
                if n > alone:
                    if n > limit:
                        serialize_args(tag, args, kwargs)  # raises, saying why
                    if chunk:
                        batch.append(P.CallInput(start, chunk, method))
                        chunk = []
                    batch.append(P.CallInput(sent, data, method))
                else:
                    if chunk and size + n > most:
                        batch.append(P.CallInput(start, chunk, method))
                        chunk = []
                    if not chunk:
                        start, size = sent, 0
                    chunk.append(data)
                    size += n
                sent += 1
        finally:
            self.sent = sent
        if chunk:
            batch.append(P.CallInput(start, chunk, method))
        return batch

    def _outputs(self, kind: str, items: list) -> Iterator[Any]:
        """Values (or exceptions) of one message's outputs: single rows (`P.CallOutput`) and chunk rows
        (`P.CallChunkOutput`), in the map's order when it keeps one."""
        if kind == "closed":
            raise connection_lost("a map")
        ready: list[tuple[int, Any]] = []
        n = 0
        buffer, runs = self.buffer, self.runs
        for out in items:
            if type(out) is P.CallChunkOutput:
                n += len(out.keys)
                if self.order:
                    base, keys = out.idx, out.keys
                    if keys and keys == list(range(keys[0], keys[0] + len(keys))):  # a run of inputs
                        if base + keys[0] == self.next_idx and not buffer and not runs:
                            ready += zip(out.status, out.data)  # the next ones, in order: no reordering
                            self.next_idx += len(keys)
                        else:  # kept whole until its turn (two containers' chunks come interleaved)
                            runs[base + keys[0]] = (out.status, out.data)
                        continue
                    for key, status, data in zip(keys, out.status, out.data):
                        buffer[base + key] = (status, data)
                else:
                    ready += zip(out.status, out.data)
            else:
                n += 1
                if self.order:
                    buffer[out.idx] = (out.status, out.data)
                else:
                    ready.append((out.status, out.data))
        if self.order and (buffer or runs):
            nxt = self.next_idx
            while True:
                run = runs.pop(nxt, None)
                if run is not None:
                    ready += zip(*run)
                    nxt += len(run[0])
                    continue
                one = buffer.pop(nxt, None)
                if one is None:
                    break
                ready.append(one)
                nxt += 1
            self.next_idx = nxt
        self.received += n
        if self.want_bar:
            self._show_progress()
        tag = self.fn._tag
        loads = pickle.loads
        for status, data in ready:
            if status == P.SUCCESS:
                if type(data) is not bytes:  # a plain value, sent as itself (see `P.ChunkOutputRow`)
                    yield data
                    continue
                try:
                    value = loads(data)  # (what `decode_output` does, inlined: this runs for every input)
                except Exception:
                    value = decode_output(tag, status, data)  # raises, saying why
                yield value
            else:
                exc = output_error(tag, status, data)
                if not self.return_exceptions:
                    raise exc
                yield exc

    def _show_progress(self) -> None:
        if self.bar is None:
            if self.sent <= _progress.MAP_BAR_MIN_INPUTS:
                return
            self.bar = _progress.MapBar(self.fn._tag)
        self.bar.update(self.received, self.sent if self.exhausted else None)

    def _finish(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        assert self.client is not None  # the map started before it could finish
        self.client.unwatch_call(self.call_id)
        if self.received < self.sent and not self.first:
            bridge_loop().call_soon_threadsafe(self.client.send, P.CallCancel(call=self.call_id, id=0))

    def iterate_sync(self, rows: Iterator[tuple[tuple, dict]]) -> Iterator[Any]:
        self.from_thread = True
        try:
            early: list = []  # messages that came while the map held back what follows its first message
            held: list[list[P.CallInput]] | None = None  # what it made meanwhile (see `PROBE_WAIT`)
            until = 0.0
            while True:
                while not self.exhausted and self.sent - self.received < MAP_WINDOW:
                    size = PROBE_INPUTS if self.first else MAP_BATCH
                    before = self.sent
                    batch = self._batch(itertools.islice(rows, size))
                    self.exhausted = self.sent - before < size
                    if held is not None:
                        held.append(batch)
                        try:  # (a moment without the GIL: the event loop's thread reads the outputs)
                            early.append(self.outq.get(timeout=HOLD_YIELD))
                        except queue.Empty:
                            if time.monotonic() < until:
                                continue
                        break
                    if batch or not self.first:
                        first = self.first
                        self._send(batch, self.exhausted)
                        if first and not self.exhausted:
                            held, until = [], time.monotonic() + PROBE_WAIT
                if held is not None:
                    if not early:
                        try:
                            early.append(self.outq.get(timeout=max(0.0, until - time.monotonic())))
                        except queue.Empty:
                            pass
                    for k, batch in enumerate(held):
                        self._send(batch, self.exhausted and k == len(held) - 1)
                    held = None
                for kind, items in early:
                    yield from self._outputs(kind, items)
                early.clear()
                if self.exhausted and self.received >= self.sent:
                    return
                kind, items = self.outq.get()
                yield from self._outputs(kind, items)
        finally:
            self._finish()

    async def iterate_async(self, rows: AsyncIterator[tuple[tuple, dict]], aq: asyncio.Queue) -> AsyncIterator[Any]:
        try:
            early: list = []  # (as in `iterate_sync`)
            held: list[list[P.CallInput]] | None = None
            until = 0.0
            while True:
                while not self.exhausted and self.sent - self.received < MAP_WINDOW:
                    size = PROBE_INPUTS if self.first else MAP_BATCH
                    chunk = []
                    async for row in rows:
                        chunk.append(row)
                        if len(chunk) >= size:
                            break
                    batch = self._batch(chunk)
                    self.exhausted = len(chunk) < size
                    if held is not None:
                        held.append(batch)
                        if aq.empty() and time.monotonic() < until:
                            continue
                        break
                    if batch or not self.first:
                        first = self.first
                        self._send(batch, self.exhausted)
                        if first and not self.exhausted:
                            held, until = [], time.monotonic() + PROBE_WAIT
                if held is not None:
                    if aq.empty():
                        try:
                            early.append(await asyncio.wait_for(aq.get(), max(0.0, until - time.monotonic())))
                        except asyncio.TimeoutError:
                            pass
                    for k, batch in enumerate(held):
                        self._send(batch, self.exhausted and k == len(held) - 1)
                    held = None
                for kind, items in early:
                    for value in self._outputs(kind, items):
                        yield value
                early.clear()
                if self.exhausted and self.received >= self.sent:
                    return
                kind, items = await aq.get()
                for value in self._outputs(kind, items):
                    yield value
        finally:
            self._finish()
