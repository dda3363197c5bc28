"""A map's chunk in the one-at-a-time loop: its inputs run one after another, each on its own.

The control plane hands a container consecutive inputs of a `.map()` as one chunk (one row, one
scheduling decision) when they are short. Each input still runs with its own timeout, cancellation,
input id and output; the outputs travel in `P.ChunkOutputRow`s by the input's key in the chunk, held
and flushed like any other output (so a long chunk reports as it goes, and the control plane restarts
the chunk's deadline at each report).

The loop is lean, as a chunk's inputs are short by construction: the common case (an input whose
arguments are plain values or unpickle, whose call returns a plain value: sent as itself, or pickled)
runs inline, and anything else (an exception, a
timeout, a cancellation, a coroutine or other non-plain result) goes through `Run`, as a single
input does. The chunk's CPU time is measured once and shared out by wall time (`Outbox.cpu_share`).
"""

from __future__ import annotations

import pickle
import signal
import time
from collections import deque
from typing import Any, Protocol

from .. import _context, _pickle
from .. import _protocol as P
from ._outbox import FLUSH_AFTER_SECONDS, Outbox
from ._run import Host, Run, Shutdown, dumps_result, finish_result


class Member(P.InputRow):
    """One input of a chunk, run on its own (never sent: `set_input_context` reads its key)."""

    key: int = 0


class Loop(Host, Protocol):
    """What a chunk needs of the one-at-a-time loop (`_runtime.Runtime`)."""

    cancelled: set[int]
    current: int | None  # the input running now (what a cancel interrupts)
    chunk_input_since: float | None  # its timer (see `Runtime._on_alarm`)

    def _run_async(self, awaitable: Any) -> Any: ...


def _slow(rt: Loop, member: Member, t0: float, exc: BaseException | None, result: Any = None) -> tuple[int, Any]:
    """An input of a chunk off the lean path, as `run_one` runs one: `exc` is what it raised so far (or
    None: `result` is what its call returned, not a plain value). Its (status, data)."""
    run = Run(rt, [member], cpu=False)
    run.t0 = t0
    if exc is None:
        try:
            rt.current = member.iid
            try:
                finish_result(rt, run, result, rt._run_async)
            finally:
                rt.current = None
        except BaseException as e:
            exc = e
    if exc is not None and not run.__exit__(type(exc), exc, exc.__traceback__):
        raise exc  # Shutdown
    return run.status, run.data


def run_chunk(rt: Loop, item: P.InputRow, outbox: Outbox, pending: deque) -> None:
    """Run each input of chunk `item`; a timed-out input ends the container as it does for a single
    input, handing back the chunk (its inputs not run yet go to another container) and whatever else
    it was sent.

    The chunk arms the timer once: each input notes when it started (`chunk_input_since`, set as the
    one before it ends) and the alarm handler lets one that has not used its own `timeout` run on
    (see `Runtime._on_alarm`)."""
    iid, method, call_id = item.iid, item.method, item.call_id
    inputs = item.args
    assert isinstance(inputs, list)  # a chunk's
    last = len(inputs) - 1
    cancelled = rt.cancelled
    monotonic = time.monotonic
    assert rt.service is not None
    fn = rt.service.callables[method]
    loads, dumps, atoms, limit = _pickle.loads, pickle.dumps, _pickle.ATOMS, P.MAX_PAYLOAD_BYTES
    set_input_id = _context.input_id.set
    prefix = f"in-{iid}-"
    SUCCESS, TIMEOUT, TERMINATED = P.SUCCESS, P.TIMEOUT, P.TERMINATED  # (locals: the hot loop)
    big, short = P.PLAIN_INT, P.PLAIN_ARG_BYTES

    t0, c0 = monotonic(), time.thread_time()  # the chunk's CPU share, measured once for its inputs
    statuses, datas = outbox.begin_chunk(iid, len(inputs), t0)
    _context.function_call_id.set(call_id)
    rt.chunk_input_since = t = t0
    signal.setitimer(signal.ITIMER_REAL, rt.timeout)
    try:
        for key, args in enumerate(inputs):
            if iid in cancelled:
                status, data = TERMINATED, None
            else:
                try:
                    rt.current = iid
                    set_input_id(prefix + str(key))
                    if type(args) is list:  # plain positional values (see `P.CallInput`)
                        result = fn(*args)
                    else:
                        a, kw = loads(args)
                        result = fn(*a, **kw)
                    rt.current = None
                    t_ = type(result)
                    if ((t_ is int and -big <= result < big) or t_ is float or t_ is bool or result is None
                            or (t_ is str and len(result) <= short and result.isascii())):
                        data, status = result, SUCCESS  # travels as itself (see `P.ChunkOutputRow`)
                    elif t_ in atoms:
                        data = dumps(result, 5)
                        if len(data) > limit:
                            data = dumps_result(rt.tag, result)  # (raises, saying why)
                        status = SUCCESS
                    else:
                        status, data = _slow(rt, Member(iid, args, method, call_id, key), t, None, result)
                except BaseException as exc:
                    rt.current = None
                    status, data = _slow(rt, Member(iid, args, method, call_id, key), t, exc)
            if key == last:
                wall = monotonic() - t0
                outbox.cpu_share = min(1.0, (time.thread_time() - c0) / wall) if wall > 0 else None
            statuses.append(status)
            datas.append(data)  # (after its status: the flusher thread counts these)
            rt.chunk_input_since = outbox.chunk_t = t = monotonic()  # the next input's time begins
            if status == TIMEOUT:
                # As for a single input (`Runtime.serve`): the user code's state is suspect; leave.
                outbox.end_chunk()
                outbox.flush(release=[iid] + [it.iid for it in pending], leaving=True)
                pending.clear()
                raise Shutdown()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        rt.chunk_input_since = None
        outbox.end_chunk()
    if not pending or outbox.held_for() > FLUSH_AFTER_SECONDS:
        outbox.flush()
