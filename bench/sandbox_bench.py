"""Sandbox timings on a private control plane: create -> first exec output, and exec round trips.

    python bench/sandbox_bench.py [--n 50]

Prints JSON rows {figure, value, unit}. `sandbox_create_to_exec`: `Sandbox.create()` until the output of
its first `exec("true")` has been seen (a new container and its agent), median of 10.
`sandbox_exec_p50`/`p99`: `exec("true")` to `wait()` on a running sandbox (a new process each time).
`sandbox_stream_mb_s`: `cat` of 64 MiB from a sandbox's exec read as bytes through the control plane.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=50)
    args = parser.parse_args()
    import homeport as modal
    from homeport.testing import Platform

    rows = []
    with Platform():
        app = modal.App.lookup("sandbox-bench", create_if_missing=True)
        modal.Sandbox.create(app=app).terminate(wait=True)  # the default image, built once
        creates = []
        for _ in range(10):
            t = time.perf_counter()
            sb = modal.Sandbox.create(app=app)
            sb.exec("true").wait()
            creates.append(time.perf_counter() - t)
            sb.terminate()
        rows.append({"figure": "sandbox_create_to_exec", "value": round(statistics.median(creates) * 1000, 1),
                     "unit": "ms"})
        sb = modal.Sandbox.create(app=app)
        execs = []
        for _ in range(args.n):
            t = time.perf_counter()
            sb.exec("true").wait()
            execs.append(time.perf_counter() - t)
        execs.sort()
        rows.append({"figure": "sandbox_exec_p50", "value": round(execs[len(execs) // 2] * 1000, 2), "unit": "ms"})
        rows.append({"figure": "sandbox_exec_p99", "value": round(execs[int(len(execs) * 0.99) - 1] * 1000, 2),
                     "unit": "ms"})
        t = time.perf_counter()
        p = sb.exec("head", "-c", str(64 << 20), "/dev/zero", text=False)
        size = len(p.stdout.read())
        p.wait()
        rows.append({"figure": "sandbox_stream_mb_s", "value": round(size / (1 << 20) / (time.perf_counter() - t), 1),
                     "unit": "MiB/s"})
        sb.terminate()
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
