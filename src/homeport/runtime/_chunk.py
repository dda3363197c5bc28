"""A map's chunk in the one-at-a-time loop: its inputs run one after another, each on its own.

The control plane hands a container consecutive inputs of a `.map()` as one chunk (one row, one
scheduling decision) when they are short. Each input still runs through `run_one` with its own timer,
cancellation and output; the outputs travel in `P.ChunkOutputRow`s by the input's key in the chunk,
held and flushed like any other output (so a long chunk reports as it goes, and the control plane
restarts the chunk's deadline at each report).
"""

from __future__ import annotations

import signal
import time
from collections import deque
from typing import Any, Protocol

from .. import _protocol as P
from ._run import Host, Run, Shutdown, call_input, run_one


class Member(P.InputRow):
    """One input of a chunk, run on its own (never sent: `set_input_context` reads its key)."""

    key: int = 0


class Loop(Host, Protocol):
    """What a chunk needs of the one-at-a-time loop (`_runtime.Runtime`)."""

    cancelled: set[int]
    current: int | None  # the input running now (what a cancel interrupts)
    chunk_input_since: float | None  # its timer (see `Runtime._on_alarm`)

    def _run_async(self, awaitable: Any) -> Any: ...


class Outbox(Protocol):
    """The loop's held outputs (`_runtime._Outbox`)."""

    def add_chunk_output(self, iid: int, key: int, output: P.OutputRow, cpu_share: float | None = None) -> None: ...
    def held_for(self) -> float: ...
    def flush(self, release: list[int] | None = None, leaving: bool = False) -> None: ...

FLUSH_AFTER_SECONDS = 0.002  # as the loop's own (`_runtime.FLUSH_AFTER_SECONDS`)


def run_chunk(rt: Loop, item: P.InputRow, outbox: Outbox, pending: deque) -> None:
    """Run each input of chunk `item`; a timed-out input ends the container as it does for a single
    input, handing back the chunk (its inputs not run yet go to another container) and whatever else
    it was sent.

    Each input runs through `run_one` with its own timeout, but the chunk arms the timer once: each
    input notes when it started (`chunk_input_since`) and the alarm handler lets one that has not used
    its own `timeout` run on (see `Runtime._on_alarm`)."""
    iid, method, call_id = item.iid, item.method, item.call_id
    assert isinstance(item.args, list)  # a chunk's
    last = len(item.args) - 1
    cancelled = rt.cancelled
    monotonic = time.monotonic

    def call(run: Run) -> None:
        call_input(rt, run, rt._run_async)

    t0, c0 = monotonic(), time.thread_time()  # the chunk's CPU share, measured once for its inputs
    rt.chunk_input_since = t0
    signal.setitimer(signal.ITIMER_REAL, rt.timeout)
    try:
        for key, args in enumerate(item.args):
            if iid in cancelled:
                out = P.OutputRow(iid, P.TERMINATED, None)
            else:
                rt.current = iid
                rt.chunk_input_since = monotonic()
                try:
                    out = run_one(rt, [Member(iid, args, method, call_id, key)], call, cpu=False)[0]
                finally:
                    rt.current = None
                    rt.chunk_input_since = monotonic()  # (a gap: the next input's time has not begun)
            share = None
            if key == last:
                wall = monotonic() - t0
                share = min(1.0, (time.thread_time() - c0) / wall) if wall > 0 else None
            outbox.add_chunk_output(iid, key, out, share)
            if out.status == P.TIMEOUT:
                # As for a single input (`Runtime.serve`): the user code's state is suspect; leave.
                outbox.flush(release=[iid] + [it.iid for it in pending], leaving=True)
                pending.clear()
                raise Shutdown()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        rt.chunk_input_since = None
    if not pending or outbox.held_for() > FLUSH_AFTER_SECONDS:
        outbox.flush()
