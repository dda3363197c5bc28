"""Dict and Queue from the client, against `multiprocessing.Manager` (also a server process over a socket).

    python bench/dict_queue_bench.py [--n 2000]

Figures: Dict put and get round trips (p50, ms), Queue put+get of one item (p50, ms), put_many/get_many
throughput of small items (items/s), and how long a blocking get takes to return after a put from
another thread (p50, ms: the control plane wakes the waiter, nothing polls).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import threading
import time


def _p50(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def _time_each(fn, n: int) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t)
    return out


def _wake_latency(put, get, n: int) -> list[float]:
    out = []
    for i in range(n):
        started = threading.Event()
        box: list[float] = []

        def waiter(started=started, box=box):
            started.set()
            get()
            box.append(time.perf_counter())

        t = threading.Thread(target=waiter)
        t.start()
        started.wait()
        time.sleep(0.005)  # let the get reach the server and wait there
        sent = time.perf_counter()
        put(i)
        t.join()
        out.append(box[0] - sent)
    return out


def bench(label: str, d, q_put, q_get, q_put_many, q_get_many, n: int) -> dict[str, float]:
    res = {
        "dict_put_p50_ms": _p50(_time_each(lambda i: d.__setitem__(i % 100, i), n)),
        "dict_get_p50_ms": _p50(_time_each(lambda i: d.get(i % 100), n)),
        "queue_put_get_p50_ms": _p50(_time_each(lambda i: (q_put(i), q_get()), n)),
    }
    items = list(range(5000))
    t = time.perf_counter()
    for _ in range(4):
        q_put_many(items)
        got = 0
        while got < len(items):
            got += len(q_get_many(1000))
    res["queue_batch_items_per_s"] = 4 * len(items) / (time.perf_counter() - t)
    res["blocking_get_wake_p50_ms"] = _p50(_wake_latency(q_put, q_get, min(n, 200)))
    print(label)
    for k, v in res.items():
        print(f"  {k:28s} {v:12,.3f}")
    return res


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()

    import homeport as modal
    from homeport.testing import Platform

    with Platform():
        with modal.Dict.ephemeral() as d, modal.Queue.ephemeral() as q:
            def get_many(k):
                return q.get_many(k, block=False)

            bench("homeport", d, q.put, q.get, q.put_many, get_many, args.n)

    with multiprocessing.Manager() as m:
        md, mq = m.dict(), m.Queue()

        def put_many(vs):
            for v in vs:
                mq.put(v)

        def get_many(k):
            out = []
            while len(out) < k and not mq.empty():
                out.append(mq.get())
            return out

        bench("multiprocessing.Manager (peer)", md, mq.put, mq.get, put_many, get_many, args.n)


if __name__ == "__main__":
    main()
