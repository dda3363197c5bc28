"""What Homeport adds on top of Ray: the same work on the local backend, on the Ray backend and as plain Ray.

    python bench/ray_backend.py [--quick] [--json PATH]

One run, one machine: a single-node Ray cluster on loopback (2 CPUs, no dashboard) that both the Ray
backend's control plane and the plain Ray peers use, and a control plane on the local backend. Figures:
- warm call: `.remote()` round trip of a trivial function on a warm container, p50/p99 (plain Ray: an
  actor method call, `ray.get` each);
- map throughput: `.map()` over trivial inputs (plain Ray: one task per input, `ray.get` of the list);
- cold start: a new app run to the first result (a new container; plain Ray: a new actor to its first
  method result). On the Ray backend it includes the node's check of its own image cache (the first
  container on the node builds the image there: "first run", a fresh control plane's first app run to its
  first result, which includes the image builds and, on Ray, the node's).
Every control plane and Ray process it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "apps"))
sys.path.insert(0, str(HERE.parent / "src"))
# Ray on loopback only (as the tests run it), read when ray is imported.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def homeport_figures(n_calls: int, n_map: int, n_cold: int) -> dict[str, float]:
    import bench_app

    out: dict[str, float] = {}
    t = time.perf_counter()
    with bench_app.app.run(show_logs=False):
        bench_app.trivial.remote(0)  # on a fresh Ray node: builds the image in the node's own cache
        out["first_ms"] = (time.perf_counter() - t) * 1e3
        for _ in range(100):
            bench_app.trivial.remote(1)
        lat = []
        for i in range(n_calls):
            t = time.perf_counter()
            bench_app.trivial.remote(i)
            lat.append(time.perf_counter() - t)
        out["warm_p50_ms"], out["warm_p99_ms"] = pct(lat, 0.5) * 1e3, pct(lat, 0.99) * 1e3
        t = time.perf_counter()
        total = sum(1 for _ in bench_app.trivial.map(range(n_map)))
        out["map_per_s"] = total / (time.perf_counter() - t)
    cold = []
    for _ in range(n_cold):
        t = time.perf_counter()
        with bench_app.app.run(show_logs=False):
            bench_app.trivial.remote(1)
            cold.append(time.perf_counter() - t)
    out["cold_ms"] = statistics.median(cold) * 1e3
    return out


def plain_ray_figures(ray, n_calls: int, n_map: int, n_cold: int) -> dict[str, float]:
    @ray.remote(num_cpus=0.125)
    class Trivial:
        def f(self, x=0):
            return x

    @ray.remote(num_cpus=0.125)
    def task(x=0):
        return x

    out: dict[str, float] = {}
    a = Trivial.remote()
    for _ in range(100):
        ray.get(a.f.remote(1))
    lat = []
    for i in range(n_calls):
        t = time.perf_counter()
        ray.get(a.f.remote(i))
        lat.append(time.perf_counter() - t)
    ray.kill(a)
    out["warm_p50_ms"], out["warm_p99_ms"] = pct(lat, 0.5) * 1e3, pct(lat, 0.99) * 1e3
    m = min(n_map, 5000)  # one task per input: Ray's own guidance is to batch; this is the like-for-like
    ray.get([task.remote(i) for i in range(100)])
    t = time.perf_counter()
    ray.get([task.remote(i) for i in range(m)])
    out["map_per_s"] = m / (time.perf_counter() - t)
    cold = []
    for _ in range(n_cold):
        t = time.perf_counter()
        b = Trivial.remote()
        ray.get(b.f.remote(1))
        cold.append(time.perf_counter() - t)
        ray.kill(b)
    out["cold_ms"] = statistics.median(cold) * 1e3
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--json", help="write the results as JSON to this path")
    args = parser.parse_args(argv)
    n_calls, n_map, n_cold = (500, 5000, 3) if args.quick else (2000, 20000, 7)

    import ray

    from homeport import _protocol as P
    from homeport.testing import Platform

    results: dict[str, dict[str, float]] = {}
    with Platform():
        results["Homeport, local backend"] = homeport_figures(n_calls, n_map, n_cold)
    # The node builds images in a cache of its own (read by its raylet's workers from this environment).
    node_images = tempfile.mkdtemp(prefix="hp-node-images-", dir="/tmp")
    os.environ["HOMEPORT_NODE_IMAGES"] = node_images
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             _node_ip_address="127.0.0.1", runtime_env={"env_vars": {"PYTHONPATH": str(HERE / "apps")}})
    saved = {k: os.environ.get(k) for k in (P.ENV_BACKEND, P.ENV_RAY_ADDRESS, P.ENV_LISTEN, P.ENV_SHARED_ROOT)}
    state = Path(tempfile.mkdtemp(prefix="hp-", dir="/tmp"))
    try:
        os.environ[P.ENV_BACKEND] = "ray"
        os.environ[P.ENV_RAY_ADDRESS] = ray.get_runtime_context().gcs_address
        os.environ[P.ENV_LISTEN] = "127.0.0.1:0"
        (state / "shared").mkdir()  # the bench app has a volume: on a cluster it needs a shared root
        os.environ[P.ENV_SHARED_ROOT] = str(state / "shared")
        with Platform(str(state)):
            results["Homeport, Ray backend"] = homeport_figures(n_calls, n_map, n_cold)
        results["plain Ray (actor / tasks)"] = plain_ray_figures(ray, n_calls, n_map, n_cold)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        ray.shutdown()
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(node_images, ignore_errors=True)

    cols = [("warm_p50_ms", "warm p50 ms"), ("warm_p99_ms", "warm p99 ms"), ("map_per_s", "map inputs/s"),
            ("cold_ms", "cold start ms"), ("first_ms", "first run ms")]
    print(f"{'':28}" + "".join(f"{label:>16}" for _, label in cols))
    for name, figures in results.items():
        print(f"{name:28}" + "".join(f"{figures.get(key, float('nan')):>16,.2f}" for key, _ in cols))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": {"cpus": os.cpu_count()}, "quick": args.quick,
                                               "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
