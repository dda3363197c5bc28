"""Microbenchmark: container CPU per input of a map's chunk (`runtime._chunk.run_chunk`), no sockets.

    python bench/chunk_micro.py [--profile]
"""
from __future__ import annotations

import collections
import signal
import sys
import time

from homeport import _pickle
from homeport import _protocol as P
from homeport.runtime import _runtime
from homeport.runtime._chunk import run_chunk
from homeport.runtime._run import Service


class _Conn:
    def __init__(self) -> None:
        self.sent = 0

    def send(self, msg) -> None:
        self.sent += 1


class _Feed:
    pass


def make_rt():
    rt = _runtime.Runtime.__new__(_runtime.Runtime)
    rt.conn = _Conn()
    rt.tag = "f"
    rt.timeout = 300.0
    rt.cancelled = set()
    rt.current = None
    rt.pending = collections.deque()
    rt._loop = None
    rt.service = Service({None: lambda x: x * 2})
    signal.signal(signal.SIGALRM, rt._on_alarm)
    return rt


def main() -> None:
    n, chunks = 1000, 100
    rt = make_rt()
    outbox = getattr(_runtime, "Outbox", None) or _runtime._Outbox(rt)
    outbox = outbox(rt) if isinstance(outbox, type) else outbox
    args = [_pickle.dumps(((i,), {})) for i in range(n)]
    items = [P.InputRow(i + 1, list(args), None, "fc-1") for i in range(chunks)]
    if "--profile" in sys.argv:
        import cProfile
        import pstats
        pr = cProfile.Profile()
        pr.enable()
        for it in items:
            run_chunk(rt, it, outbox, collections.deque())
        pr.disable()
        pstats.Stats(pr).sort_stats("tottime").print_stats(14)
        return
    def per_input(items: list[P.InputRow]) -> float:
        best = []
        for _ in range(5):
            c0 = time.process_time()
            for it in items:
                run_chunk(rt, it, outbox, collections.deque())
            best.append((time.process_time() - c0) / (n * chunks) * 1e6)
        return sorted(best)[2]

    pickled = per_input(items)
    # Plain positional values travel as themselves, not pickled (see `P.CallInput`).
    plain = per_input([P.InputRow(i + 1, [[k] for k in range(n)], None, "fc-1") for i in range(chunks)])
    floor = []
    fn = rt.service.callables[None]
    for _ in range(5):
        c0 = time.process_time()
        for _c in range(chunks):
            for a in args:
                x, kw = _pickle.loads(a)
                _pickle.dumps(fn(*x, **kw))
        floor.append((time.process_time() - c0) / (n * chunks) * 1e6)
    print(f"chunk path: {pickled:.2f} us/input with pickled arguments, {plain:.2f} with plain ones (medians of 5); "
          f"bare loads+call+dumps: {sorted(floor)[2]:.2f} us/input")


if __name__ == "__main__":
    main()
