"""The one-at-a-time loop's held outputs (`Outbox`).

Those of short inputs wait up to `FLUSH_AFTER_SECONDS` to travel in one message; a thread sends them
when the next input runs longer than that, so that a finished input's output never waits behind a long
(or stuck) one. The control plane times each input from the output before it, and a held output would
make it count the wrong input as running.

A map's chunk (`_chunk`) appends its inputs' outputs to two lists without the lock (`begin_chunk`): the
loop appends, the flusher thread takes from the front under the lock, whatever the loop appends
meanwhile stays for the next flush (a list's append and slicing are each atomic under the GIL).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

from .. import _protocol as P

FLUSH_AFTER_SECONDS = 0.002


class Flusher(Protocol):
    def _flush(self, outputs: list[P.OutputRow], release: list[int] | None = None, leaving: bool = False,
               chunks: list[P.ChunkOutputRow] | None = None) -> None: ...


class Outbox:
    def __init__(self, rt: Flusher, start: bool = True) -> None:
        """`start`: its flusher thread starts now, else whoever made it starts `thread` (`start_soon`)."""
        self._rt = rt
        self._cond = threading.Condition()
        self._items: list[P.OutputRow] = []
        self._chunks: list[P.ChunkOutputRow] = []  # outputs of inputs of chunks, as rows
        self._since = 0.0
        # The chunk running now (`begin_chunk`): its id, each finished input's status and data (in key
        # order), how many of them were taken already, and when the last taken one (and the last one) ended.
        self._chunk: int | None = None
        self._status: list[int] = []
        self._data: list[Any] = []
        self._size = self._taken = 0
        self._mark = 0.0
        self.chunk_t = 0.0  # the chunk's loop sets it as each input ends
        self.cpu_share: float | None = None  # and this, the chunk's CPU time over its wall time, at its end
        self.thread = threading.Thread(target=self._watch, name="homeport-flusher", daemon=True)
        if start:
            self.thread.start()

    def add(self, output: P.OutputRow) -> None:
        with self._cond:
            if not self._items and not self._chunks:
                self._since = time.monotonic()
                self._cond.notify()
            self._items.append(output)

    def begin_chunk(self, iid: int, size: int, t0: float) -> tuple[list[int], list[Any]]:
        """Chunk `iid` of `size` inputs starts at `t0`: the lists its loop appends each input's status and
        data to (status first), setting `chunk_t` after (and `cpu_share` before its last input's); the
        flusher thread sends what is in them every `FLUSH_AFTER_SECONDS`."""
        with self._cond:
            self._chunk, self._size, self._taken, self._mark, self.chunk_t = iid, size, 0, t0, t0
            self.cpu_share = None
            self._status, self._data = [], []
            self._cond.notify()
            return self._status, self._data

    def end_chunk(self) -> None:
        """The chunk's loop ended: its outputs not sent yet are held as a row."""
        with self._cond:
            self._take_chunk()
            self._chunk = None

    def _take_chunk(self) -> P.ChunkOutputRow | None:
        """(Under the lock.) The running chunk's outputs not taken yet, as a row held with the others."""
        data, status = self._data, self._status
        n = len(data)  # appended after its status: each of the first n has both
        if not n or self._chunk is None:
            return None
        t = self.chunk_t
        datas, statuses = data[:n], status[:n]
        del data[:n], status[:n]
        k = self._taken
        self._taken = k + n
        row = P.ChunkOutputRow(self._chunk, list(range(k, k + n)), statuses, datas, max(0.0, t - self._mark))
        self._mark = t
        if k + n == self._size and self.cpu_share is not None:  # the row with its last input: its CPU share
            row.cpu = row.seconds * self.cpu_share
        if not self._items and not self._chunks:
            self._since = time.monotonic()
        self._chunks.append(row)
        return row

    def send(self, output: P.OutputRow) -> None:
        """Send `output` now, with whatever is held before it."""
        with self._cond:
            self._take_chunk()
            items, self._items = self._items, []
            chunks, self._chunks = self._chunks, []
            items.append(output)
            self._rt._flush(items, chunks=chunks)

    def held_for(self) -> float:
        return time.monotonic() - self._since if self._items or self._chunks else 0.0

    def flush(self, release: list[int] | None = None, leaving: bool = False) -> None:
        with self._cond:  # sent under the lock: outputs keep their order, a release comes after them
            self._take_chunk()
            items, self._items = self._items, []
            chunks, self._chunks = self._chunks, []
            if items or chunks or release or leaving:
                self._rt._flush(items, release=release, leaving=leaving, chunks=chunks)

    def _watch(self) -> None:
        with self._cond:
            while True:
                if self._chunk is not None and self._data:
                    self._take_chunk()
                if not self._items and not self._chunks:
                    # A chunk running: look again after a while (its loop appends without waking this thread).
                    self._cond.wait(FLUSH_AFTER_SECONDS if self._chunk is not None else None)
                    continue
                wait = self._since + FLUSH_AFTER_SECONDS - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                items, self._items = self._items, []
                chunks, self._chunks = self._chunks, []
                try:
                    self._rt._flush(items, chunks=chunks)
                except OSError:
                    return  # the connection is gone; the main thread finds out too
