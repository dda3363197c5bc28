"""Homeport's benchmarks, each against its peers in the same run.

    python bench/run.py [--quick] [--only NAME[,NAME]] [--json PATH] [--no-ray]

Prints a table and writes JSON rows: {figure, value, unit, peer, peer_value, target}. Homeport runs on a
private control plane (homeport.testing.Platform), stopped at the end; Ray runs locally with 2 CPUs.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "apps"))
sys.path.insert(0, str(HERE.parent / "src"))

FIGURES: dict[str, Callable[[Context], list[dict]]] = {}


def figure(name: str):
    def register(fn):
        FIGURES[name] = fn
        return fn

    return register


class Context:
    def __init__(self, quick: bool, use_ray: bool) -> None:
        self.quick = quick
        self.use_ray = use_ray
        self._ray = None
        self.platform = None  # the private control plane (homeport.testing.Platform), set by main

    def ray(self):
        """Ray, started once (2 CPUs, no dashboard), or None when not installed / disabled."""
        if not self.use_ray:
            return None
        if self._ray is None:
            try:
                import ray
            except ImportError:
                self.use_ray = False
                return None
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                     runtime_env={"env_vars": {"PYTHONPATH": str(HERE / "apps")}})
            self._ray = ray
        return self._ray

    def close(self) -> None:
        if self._ray is not None:
            self._ray.shutdown()


def row(figure: str, value: float, unit: str, peer: str | None = None, peer_value: float | None = None,
        target: str | None = None) -> dict:
    return {"figure": figure, "value": value, "unit": unit, "peer": peer, "peer_value": peer_value, "target": target}


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def _containers(function: str) -> list[dict]:
    from homeport import _protocol as P
    from homeport._bridge import run_sync
    from homeport._client import get_client

    async def ls():
        return await (await get_client()).request({"t": P.CONTAINER_LIST})

    return [c for c in run_sync(ls()) if c["function"] == function]


def _local_trivial(x=0):
    return x


# --- issue 2 --------------------------------------------------------------------------------------
@figure("warm_remote")
def warm_remote(ctx: Context) -> list[dict]:
    import bench_app

    n = 500 if ctx.quick else 3000
    block = 50
    out = []
    # Homeport and its peer are measured in alternating blocks of calls, so that both see the same load
    # on the machine (measured one after the other, a change of load between the two windows decided p99).
    lat: list[float] = []
    ppe: list[float] = []
    with bench_app.app.run(show_logs=False), concurrent.futures.ProcessPoolExecutor(1) as ex:
        for _ in range(200):
            bench_app.trivial.remote(1)
            ex.submit(_local_trivial, 1).result()
        for start in range(0, n, block):
            for i in range(start, start + block):
                t = time.perf_counter()
                bench_app.trivial.remote(i)
                lat.append(time.perf_counter() - t)
            for i in range(start, start + block):
                t = time.perf_counter()
                ex.submit(_local_trivial, i).result()
                ppe.append(time.perf_counter() - t)
    p50, p99 = pct(lat, 0.5) * 1e3, pct(lat, 0.99) * 1e3
    peer50, peer99 = pct(ppe, 0.5) * 1e3, pct(ppe, 0.99) * 1e3
    out.append(row("warm_remote_p50", p50, "ms", "ProcessPoolExecutor (interleaved)", peer50, "<= the peer (issue 20)"))
    out.append(row("warm_remote_p99", p99, "ms", "ProcessPoolExecutor (interleaved)", peer99, "<= 1.5x the peer (issue 20)"))
    out.append(row("warm_remote_p50_ratio", p50 / peer50, "x", target="<= 1.0"))
    out.append(row("warm_remote_p99_ratio", p99 / peer99, "x", target="<= 1.5"))
    ray = ctx.ray()
    if ray is not None:
        @ray.remote
        class A:
            def f(self, x=0):
                return x

        @ray.remote
        def task(x=0):
            return x

        a = A.remote()
        for _ in range(200):
            ray.get(a.f.remote(1))
        actor = []
        for i in range(n):
            t = time.perf_counter()
            ray.get(a.f.remote(i))
            actor.append(time.perf_counter() - t)
        for _ in range(50):
            ray.get(task.remote(1))
        tasks = []
        for i in range(n // 3):
            t = time.perf_counter()
            ray.get(task.remote(i))
            tasks.append(time.perf_counter() - t)
        out.append(row("warm_remote_p50", p50, "ms", "Ray actor call", pct(actor, 0.5) * 1e3))
        out.append(row("warm_remote_p50", p50, "ms", "Ray task", pct(tasks, 0.5) * 1e3))
        out.append(row("warm_remote_p99", p99, "ms", "Ray actor call", pct(actor, 0.99) * 1e3))
        ray.kill(a)
    return out


@figure("map_throughput")
def map_throughput(ctx: Context) -> list[dict]:
    import bench_app

    n = 20_000 if ctx.quick else 100_000
    # Rounds of Homeport and its peer alternate (medians reported), so that both see the same load.
    hps: list[float] = []
    ppes: list[float] = []
    with bench_app.app.run(show_logs=False), concurrent.futures.ProcessPoolExecutor(2) as ex:
        bench_app.trivial.remote(0)
        list(ex.map(_local_trivial, range(1000), chunksize=100))
        for _ in range(3):
            t = time.perf_counter()
            total = sum(1 for _ in bench_app.trivial.map(range(n)))
            hps.append(total / (time.perf_counter() - t))
            t = time.perf_counter()
            list(ex.map(_local_trivial, range(n), chunksize=1000))
            ppes.append(n / (time.perf_counter() - t))
    hp, ppe = statistics.median(hps), statistics.median(ppes)
    out = [row("map_throughput", hp, "inputs/s", "ProcessPoolExecutor (chunksize 1000), alternated", ppe,
               ">= 25% of the peer (issue 20)"),
           row("map_vs_peer", hp / ppe, "x", target=">= 0.25")]
    ray = ctx.ray()
    if ray is not None:
        @ray.remote
        def task(x=0):
            return x

        m = 2000 if ctx.quick else 5000
        ray.get([task.remote(i) for i in range(100)])
        t = time.perf_counter()
        ray.get([task.remote(i) for i in range(m)])
        out.append(row("map_throughput", hp, "inputs/s", f"Ray tasks ({m})", m / (time.perf_counter() - t)))
    return out


def _cold_starts(ctx: Context, fn) -> tuple[float, float]:
    """Median ms from a new run of the bench app to the first result of `fn` (a new container), and of
    that the first call alone (`fn.remote()` with no container of it running: the container's start)."""
    import bench_app

    whole, calls = [], []
    for _ in range(5 if ctx.quick else 15):
        t = time.perf_counter()
        with bench_app.app.run(show_logs=False):
            c = time.perf_counter()
            fn.remote(1)
            done = time.perf_counter()
            whole.append(done - t)
            calls.append(done - c)
    return statistics.median(whole) * 1e3, statistics.median(calls) * 1e3


def _median_cold_start(ctx: Context, fn) -> float:
    return _cold_starts(ctx, fn)[0]


@figure("cold_start")
def cold_start(ctx: Context) -> list[dict]:
    """A new app run to the first result of a trivial function (a new container, cached image); and the
    first call alone, in the app already running (the container's start, without the app's)."""
    import bench_app

    hp, call = _cold_starts(ctx, bench_app.trivial)
    target = "<= 10 ms p50, isolated (issue 20)"
    out = [row("cold_start", hp, "ms", target=target),
           row("cold_start_call", call, "ms", target="the first call of a running app: the container's start")]
    ray = ctx.ray()
    if ray is not None:
        @ray.remote
        class A:
            def f(self, x=0):
                return x

        rs = []
        for _ in range(3 if ctx.quick else 8):
            t = time.perf_counter()
            a = A.remote()
            ray.get(a.f.remote(1))
            rs.append(time.perf_counter() - t)
            ray.kill(a)
        out[0] = row("cold_start", hp, "ms", "new Ray actor", statistics.median(rs) * 1e3, target)
    return out


@figure("volume_cold_start")
def volume_cold_start(ctx: Context) -> list[dict]:
    """Like cold_start, for a function that mounts a volume (its containers run in their own view)."""
    import bench_app

    return [row("volume_cold_start", _median_cold_start(ctx, bench_app.with_volume), "ms", target="close to cold_start")]


# --- issue 12 -------------------------------------------------------------------------------------
@figure("isolation_cost")
def isolation_cost(ctx: Context) -> list[dict]:
    """Cold start and warm call with containers isolated from the host (the default: PID, mount and
    user namespaces, a cgroup each) and without (HOMEPORT_ISOLATION=0), in this run: fresh control
    planes, the two modes taking turns (a busy machine's load drifts), medians over every turn."""
    import bench_app

    from homeport.testing import Platform

    rounds, colds, calls = (3, 3, 300) if ctx.quick else (6, 5, 1000)
    cold: dict[str, list[float]] = {"0": [], "1": []}
    warm: dict[str, list[float]] = {"0": [], "1": []}
    saved = os.environ.get("HOMEPORT_ISOLATION")
    try:
        for _ in range(rounds):
            for mode in ("0", "1"):
                os.environ["HOMEPORT_ISOLATION"] = mode
                with Platform():
                    for _ in range(colds):
                        t = time.perf_counter()
                        with bench_app.app.run(show_logs=False):
                            bench_app.trivial.remote(1)
                            cold[mode].append((time.perf_counter() - t) * 1e3)
                    with bench_app.app.run(show_logs=False):
                        for _ in range(100):
                            bench_app.trivial.remote(1)
                        for i in range(calls):
                            t = time.perf_counter()
                            bench_app.trivial.remote(i)
                            warm[mode].append((time.perf_counter() - t) * 1e3)
    finally:
        if saved is None:
            os.environ.pop("HOMEPORT_ISOLATION", None)
        else:
            os.environ["HOMEPORT_ISOLATION"] = saved
    peer = "isolation off (HOMEPORT_ISOLATION=0), same run"
    return [row("isolated_cold_start", statistics.median(cold["1"]), "ms", peer, statistics.median(cold["0"])),
            row("isolated_warm_remote_p50", pct(warm["1"], 0.5), "ms", peer, pct(warm["0"], 0.5))]


@figure("rootfs_cold_start")
def rootfs_cold_start(ctx: Context) -> list[dict]:
    """Cold start of a function in an image with its own root file system (`run_commands`), forked from
    the image's template and started afresh (HOMEPORT_TEMPLATES=0): its container a host user of its
    own in its own PID namespace (the default) against HOMEPORT_ISOLATION=0 (host root in a chroot),
    fresh control planes taking turns in this run, medians over every turn. Skipped without root file
    system images here."""
    from homeport.image_builder.rootfs import DebianBase, missing
    from homeport.testing import Platform

    if not DebianBase().ready or missing() is not None:
        return []
    import bench_rootfs

    rounds, colds = (2, 3) if ctx.quick else (4, 5)
    cold: dict[tuple[str, str], list[float]] = {}
    saved = {k: os.environ.get(k) for k in ("HOMEPORT_ISOLATION", "HOMEPORT_TEMPLATES")}
    try:
        for _ in range(rounds):
            for templates in ("1", "0"):
                for mode in ("0", "1"):
                    os.environ["HOMEPORT_ISOLATION"] = mode
                    os.environ["HOMEPORT_TEMPLATES"] = templates
                    with Platform():
                        with bench_rootfs.app.run(show_logs=False):  # the image built, its template warm
                            bench_rootfs.trivial.remote(1)
                        for _ in range(colds):
                            t = time.perf_counter()
                            with bench_rootfs.app.run(show_logs=False):
                                bench_rootfs.trivial.remote(1)
                                cold.setdefault((templates, mode), []).append((time.perf_counter() - t) * 1e3)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    peer = "HOMEPORT_ISOLATION=0 (host root in a chroot), same run"
    return [row("rootfs_cold_start", statistics.median(cold[("1", "1")]), "ms", peer, statistics.median(cold[("1", "0")])),
            row("rootfs_spawned_cold_start", statistics.median(cold[("0", "1")]), "ms", peer,
                statistics.median(cold[("0", "0")]))]


# --- issue 6 --------------------------------------------------------------------------------------
@figure("snapshot_cold_start")
def snapshot_cold_start(ctx: Context) -> list[dict]:
    """A class whose enter hook imports numpy and builds ~1 GB of state: a new container's first
    result with a memory snapshot, without, and as a new Ray actor."""
    import bench_app

    reps = 3 if ctx.quick else 5
    mb = bench_app.STATE_MB
    # The snapshot is taken once (the first run); later runs start containers from it.
    t = time.perf_counter()
    with bench_app.app.run(show_logs=False):
        bench_app.HeavySnap().size.remote()
    first = time.perf_counter() - t

    calls: list[float] = []

    def measure(cls, record: bool = False) -> float:
        samples = []
        for _ in range(reps):
            t = time.perf_counter()
            with bench_app.app.run(show_logs=False):
                c = time.perf_counter()
                cls().size.remote()
                done = time.perf_counter()
                samples.append(done - t)
                if record:
                    calls.append(done - c)
        return statistics.median(samples)

    snap = measure(bench_app.HeavySnap, record=True)
    snap_call = statistics.median(calls)
    fork = _raw_fork_ms(mb, reps * 2)
    cold = measure(bench_app.Heavy)
    out = [
        row("snapshot_cold_start", snap * 1e3, "ms", f"raw fork() of a process with the same {mb} MB state", fork,
            "<= 1.3x the raw fork (issue 20)"),
        row("snapshot_vs_raw_fork", snap * 1e3 / fork, "x", target="<= 1.3x"),
        row("snapshot_cold_call", snap_call * 1e3, "ms", f"raw fork() of a process with the same {mb} MB state", fork,
            "the first call of a running app: the container's start"),
        row("snapshot_call_vs_raw_fork", snap_call * 1e3 / fork, "x", target="<= 1.3x"),
        row("snapshot_cold_start", snap * 1e3, "ms", f"same class without snapshot ({mb} MB state)", cold * 1e3,
            "<= 50 ms and >= 20x faster"),
        row("snapshot_speedup", cold / snap, "x", target=">= 20x"),
        row("snapshot_first_take", first * 1e3, "ms", target="once per code/image/parameters"),
    ]
    ray = ctx.ray()
    if ray is not None:
        def build_state(mb=mb):
            import numpy as np

            return np.random.default_rng(0).standard_normal(mb * (1 << 20) // 8)

        @ray.remote
        class HeavyActor:
            def __init__(self):
                self.state = build_state()

            def size(self):
                return self.state.nbytes

        rs = []
        for _ in range(2 if ctx.quick else 3):
            t = time.perf_counter()
            a = HeavyActor.remote()
            ray.get(a.size.remote())
            rs.append(time.perf_counter() - t)
            ray.kill(a)
        out.append(row("snapshot_cold_start", snap * 1e3, "ms", "new Ray actor, same class", statistics.median(rs) * 1e3))
    return out


_RAW_FORK = r"""
import os, statistics, sys, time
import numpy as np

state = np.random.default_rng(0).standard_normal(int(sys.argv[1]) * (1 << 20) // 8)  # as bench_app's
samples = []
for _ in range(int(sys.argv[2])):
    r, w = os.pipe()
    t = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.write(w, b"%d" % state.nbytes)  # the child runs and answers, as a container's first result
        os._exit(0)
    os.read(r, 32)
    samples.append(time.perf_counter() - t)
    os.waitpid(pid, 0)
    os.close(r)
    os.close(w)
print(statistics.median(samples) * 1e3)
"""


def _raw_fork_ms(mb: int, reps: int) -> float:
    """The floor of a snapshot's cold start: median ms from fork() of a Python process holding the same
    state (numpy, `mb` MB really written) until its child has run and answered through a pipe."""
    done = subprocess.run([sys.executable, "-c", _RAW_FORK, str(mb), str(reps)], capture_output=True, text=True,
                          check=True, timeout=600)
    return float(done.stdout.strip().splitlines()[-1])


# --- issue 4 --------------------------------------------------------------------------------------
@figure("burst")
def burst(ctx: Context) -> list[dict]:
    """0 -> 10 containers for 100 queued 1-second inputs (max_containers=10): time to the tenth."""
    import bench_app

    with bench_app.app.run(show_logs=False):
        done = threading.Event()
        results: list = []

        def consume():
            results.extend(bench_app.one_second.map(range(100)))
            done.set()

        t = time.perf_counter()
        threading.Thread(target=consume, daemon=True).start()
        tenth = None
        while tenth is None and time.perf_counter() - t < 60:
            if sum(c["state"] == "ready" for c in _containers("one_second")) >= 10:
                tenth = time.perf_counter() - t
            time.sleep(0.005)
        done.wait(120)
    return [row("burst_tenth_container", (tenth or float("nan")) * 1e3, "ms", target="tens of ms per scale-up"),
            row("burst_100x1s_total", 0.0 if not done.is_set() else len(results), "outputs")]


@figure("scaledown")
def scaledown(ctx: Context) -> list[dict]:
    """An idle container is stopped within scaledown_window (2 s) + 1 s."""
    import bench_app

    with bench_app.app.run(show_logs=False):
        bench_app.idle_probe.remote()
        t = time.perf_counter()
        while _containers("idle_probe") and time.perf_counter() - t < 30:
            time.sleep(0.01)
        gone = time.perf_counter() - t
    return [row("scaledown_after_idle", gone, "s", target="<= 3 s (window 2 s + 1 s)")]


@figure("concurrency_overhead")
def concurrency_overhead(ctx: Context) -> list[dict]:
    """1,000 concurrent 1-second sleeps on one container with max_inputs=1000."""
    import bench_app

    with bench_app.app.run(show_logs=False):
        bench_app.sleeper.remote(0)
        t = time.perf_counter()
        n = sum(1 for _ in bench_app.sleeper.map([1.0] * 1000))
        total = time.perf_counter() - t
    return [row("concurrency_1000x1s", total, "s", target="close to 1 s"),
            row("concurrency_overhead", (total - 1.0) * 1e3, "ms", target=f"{n} inputs")]


# --- issue 5 --------------------------------------------------------------------------------------
@figure("image_build")
def image_build(ctx: Context) -> list[dict]:
    """An image with one small pip package: its first build (a step never built before; uv's download
    cache may already hold the wheel), and the same image again (cached: resolved, nothing built)."""
    import uuid

    import homeport as modal

    app = modal.App("bench-image")
    image = modal.Image.debian_slim().pip_install("six==1.16.0").env({"BENCH_NONCE": uuid.uuid4().hex})

    @app.function(image=image, serialized=True)
    def six_version():
        import six

        return six.__version__

    def run_once() -> tuple[float, float]:
        t = time.perf_counter()
        with app.run(show_logs=False):
            started = time.perf_counter() - t
            assert six_version.remote() == "1.16.0"
            return started, time.perf_counter() - t

    first = run_once()
    again = min((run_once() for _ in range(3)), key=lambda x: x[0])
    return [
        row("image_first_build", first[0] * 1e3, "ms", target="app.run() entered; build streamed"),
        row("image_first_result", first[1] * 1e3, "ms", target="first build + a container"),
        row("image_cached", again[0] * 1e3, "ms", target="milliseconds"),
        row("image_cached_first_result", again[1] * 1e3, "ms"),
    ]


# --- issue 7 --------------------------------------------------------------------------------------
def _wrk(url: str, seconds: int, connections: int = 32) -> dict[str, float]:
    """Requests/s and latency percentiles (ms) from `wrk -t1 -c<connections> --latency`."""
    import re
    import subprocess

    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    units = {"us": 1e-3, "ms": 1.0, "s": 1e3}

    def latency(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(m.group(1)) * units[m.group(2)] if m else float("nan")

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return {"rps": float(rps.group(1)) if rps else float("nan"), "p50": latency("50"), "p99": latency("99")}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_direct(handler: str, port: int) -> subprocess.Popen:
    """The peer: the same FastAPI app (`fastapi_app`, as a container builds it) in one uvicorn process."""
    return subprocess.Popen(
        [sys.executable, "-c",
         "import uvicorn, bench_app; from homeport.runtime._web import fastapi_app; "
         f"uvicorn.run(fastapi_app(bench_app.{handler}.local, {{'method': 'GET'}}), host='127.0.0.1', "
         f"port={port}, http='httptools', loop='uvloop', access_log=False, log_level='warning')"],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def _wait_http(url: str) -> None:
    import httpx

    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@figure("web_gateway")
def web_gateway(ctx: Context) -> list[dict]:
    """A trivial `fastapi_endpoint` through the gateway (one container) against the same FastAPI app
    served directly by one uvicorn process, both loaded by wrk from another process on loopback; with a
    plain `def` handler (FastAPI runs it in a thread) and an `async def` one. The two are measured in
    turns, twice each, and the best of each kept: on a small machine whatever else runs moves them."""
    import shutil

    import bench_app

    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (Debian: apt-get install wrk)")
    seconds = 3 if ctx.quick else 8
    out = []
    with bench_app.app.run(show_logs=False):
        for handler, label in (("web_hello", "def"), ("web_hello_async", "async def")):
            gateway_url = getattr(bench_app, handler).web_url
            _wait_http(gateway_url)
            port = _free_port()
            direct = _serve_direct(handler, port)
            try:
                direct_url = f"http://127.0.0.1:{port}/"
                _wait_http(direct_url)
                hp: dict[str, list] = {"rps": [], "p50": [], "p99": [], "p50_1": [], "p99_1": []}
                peer: dict[str, list] = {k: [] for k in hp}
                for url in (gateway_url, direct_url):
                    _wrk(url, 1)
                for _round in range(2):
                    for url, into in ((gateway_url, hp), (direct_url, peer)):
                        loaded, one = _wrk(url, seconds), _wrk(url, seconds, connections=1)
                        for k, v in (("rps", loaded["rps"]), ("p50", loaded["p50"]), ("p99", loaded["p99"]),
                                     ("p50_1", one["p50"]), ("p99_1", one["p99"])):
                            into[k].append(v)
            finally:
                direct.terminate()
                direct.wait(10)
            best = {k: (max if k == "rps" else min) for k in hp}
            h = {k: best[k](v) for k, v in hp.items()}
            d = {k: best[k](v) for k, v in peer.items()}
            out += [
                row(f"web_requests_per_s ({label})", h["rps"], "req/s", "uvicorn direct", d["rps"],
                    ">= 70% of direct (wrk -c32)"),
                row(f"web_throughput_ratio ({label})", h["rps"] / d["rps"], "x", target=">= 0.70"),
                row(f"web_p50_loaded ({label})", h["p50"], "ms", "uvicorn direct", d["p50"], "wrk -c32"),
                row(f"web_p99_loaded ({label})", h["p99"], "ms", "uvicorn direct", d["p99"], "wrk -c32"),
                row(f"web_p50 ({label})", h["p50_1"], "ms", "uvicorn direct", d["p50_1"], "wrk -c1"),
                row(f"web_added_p50 ({label})", h["p50_1"] - d["p50_1"], "ms", target="<= 1 ms (wrk -c1)"),
                row(f"web_p99 ({label})", h["p99_1"], "ms", "uvicorn direct", d["p99_1"], "wrk -c1"),
            ]
    return out


@figure("schedule_precision")
def schedule_precision(ctx: Context) -> list[dict]:
    """`Period(seconds=1)` over 60 s (15 s with --quick): how many ticks ran and how far each was from
    the 1-second grid it should be on."""
    import tempfile

    window = 15 if ctx.quick else 60
    ticks_file = Path(tempfile.mkdtemp(prefix="hp-ticks-")) / "ticks"
    os.environ["BENCH_TICKS_FILE"] = str(ticks_file)
    sys.modules.pop("bench_app", None)
    import bench_app  # the schedule's file path is read when the module is imported

    with bench_app.ticks_app.run(show_logs=False):
        time.sleep(window + 0.5)
    times = [float(x) for x in ticks_file.read_text().split()] if ticks_file.exists() else []
    times = [t for t in times if t <= times[0] + window] if times else []
    # Jitter: how far each interval between ticks is from the 1 s period.
    jitter = [abs((b - a) - 1.0) * 1e3 for a, b in itertools.pairwise(times)]
    nan = float("nan")
    return [
        row("schedule_ticks", len(times), f"in {window} s", target=f"{window} or {window + 1}"),
        row("schedule_jitter_p50", pct(jitter, 0.5) if jitter else nan, "ms", target="|interval - 1 s|"),
        row("schedule_jitter_max", max(jitter) if jitter else nan, "ms"),
    ]


# --- issue 20 -------------------------------------------------------------------------------------
@figure("spawn_submit")
def spawn_submit(ctx: Context) -> list[dict]:
    """10,000 `.spawn()` calls submitted, then gathered; the peer submits the same calls to a
    ProcessPoolExecutor (2 workers) and waits for them."""
    import bench_app

    import homeport as modal

    n = 2000 if ctx.quick else 10_000
    with bench_app.app.run(show_logs=False):
        bench_app.trivial.remote(0)
        t = time.perf_counter()
        calls = [bench_app.trivial.spawn(i) for i in range(n)]
        submitted = time.perf_counter() - t
        results = modal.FunctionCall.gather(*calls)
        total = time.perf_counter() - t
        assert results == list(range(n))
    with concurrent.futures.ProcessPoolExecutor(2) as ex:
        ex.submit(_local_trivial, 0).result()
        t = time.perf_counter()
        futs = [ex.submit(_local_trivial, i) for i in range(n)]
        ppe_submitted = time.perf_counter() - t
        [f.result() for f in futs]
        ppe_total = time.perf_counter() - t
    return [row("spawn_submitted", n / submitted, "calls/s", "ProcessPoolExecutor.submit", n / ppe_submitted,
                ">= 20,000/s"),
            row("spawn_gathered", n / total, "calls/s", "ProcessPoolExecutor (submit + result)", n / ppe_total)]


def _threads_calling(call, threads: int, seconds: float) -> tuple[int, list[float]]:
    """`threads` threads each calling `call(i)` in a loop for `seconds`: (calls made, latencies)."""
    lat: list[list[float]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads + 1)
    stop = time.perf_counter() + seconds + 1e9  # set for real once all threads are up

    def work(k: int) -> None:
        mine = lat[k]
        start.wait()
        i = 0
        while time.perf_counter() < stop:
            t = time.perf_counter()
            call(i)
            mine.append(time.perf_counter() - t)
            i += 1

    pool = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(threads)]
    for th in pool:
        th.start()
    stop = time.perf_counter() + seconds
    start.wait()
    for th in pool:
        th.join(seconds + 60)
    flat = [x for xs in lat for x in xs]
    return len(flat), flat


@figure("many_callers")
def many_callers(ctx: Context) -> list[dict]:
    """200 client threads calling `.remote()` of a trivial function for 30 s (5 s with --quick), and
    the same threads each submitting to a ProcessPoolExecutor (2 workers) and waiting for the result."""
    import bench_app

    threads, seconds = 200, (5.0 if ctx.quick else 30.0)
    with bench_app.app.run(show_logs=False):
        bench_app.trivial.remote(0)
        most = [0]
        watching = threading.Event()

        def watch() -> None:
            while not watching.is_set():
                most[0] = max(most[0], sum(c["state"] == "ready" for c in _containers("trivial")))
                time.sleep(0.25)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        n, lat = _threads_calling(bench_app.trivial.remote, threads, seconds)
        watching.set()
        watcher.join(10)
    with concurrent.futures.ProcessPoolExecutor(2) as ex:
        ex.submit(_local_trivial, 0).result()
        pn, plat = _threads_calling(lambda i: ex.submit(_local_trivial, i).result(), threads, seconds)
    return [
        row("callers_200_throughput", n / seconds, "calls/s", "ProcessPoolExecutor (2 workers)", pn / seconds,
            ">= peer"),
        row("callers_200_p50", pct(lat, 0.5) * 1e3, "ms", "ProcessPoolExecutor (2 workers)", pct(plat, 0.5) * 1e3),
        row("callers_200_p99", pct(lat, 0.99) * 1e3, "ms", "ProcessPoolExecutor (2 workers)", pct(plat, 0.99) * 1e3),
        row("callers_200_containers", most[0], "ready (most)", target="scales out for concurrent callers"),
    ]


@figure("map_1m")
def map_1m(ctx: Context) -> list[dict]:
    """A 1,000,000-input `.map` (200,000 with --quick) against a 100,000-input one in the same run, and
    the control plane's memory (RSS) before and after."""
    import bench_app
    import psutil

    big = 200_000 if ctx.quick else 1_000_000
    cp = psutil.Process(ctx.platform.pid)
    with bench_app.app.run(show_logs=False):
        bench_app.trivial.remote(0)
        t = time.perf_counter()
        small = sum(1 for _ in bench_app.trivial.map(range(100_000))) / (time.perf_counter() - t)
        rss0 = cp.memory_info().rss
        peak = [rss0]
        done = threading.Event()

        def watch() -> None:
            while not done.wait(0.2):
                peak[0] = max(peak[0], cp.memory_info().rss)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        t = time.perf_counter()
        total = sum(1 for _ in bench_app.trivial.map(range(big)))
        rate = total / (time.perf_counter() - t)
        done.set()
        watcher.join(5)
        rss1 = cp.memory_info().rss
    mb = 1 << 20
    return [
        row(f"map_{big // 1000}k_rate", rate, "inputs/s", "the same map of 100k", small, "same per-input rate"),
        row("map_big_control_plane_rss", rss1 / mb, "MB", "before the big map", rss0 / mb, "flat"),
        row("map_big_control_plane_peak", peak[0] / mb, "MB", "before the big map", rss0 / mb, "flat"),
    ]


@figure("scheduler_sim")
def scheduler_sim(ctx: Context) -> list[dict]:
    """The pure scheduler alone (no processes): one pool with 10,000 ready containers, each holding
    its window of short inputs, and 1,000,000 queued inputs. Timed: a periodic pass (`tick`), the
    pass after one container's output (`inputs_done`, which assigns it more), and one `submit`."""
    from homeport.server.core.scheduler import Capacity, Container, Phase, PoolConfig, Scheduler

    n_containers, n_queued = 10_000, 1_000_000
    ids = itertools.count()
    sched = Scheduler(lambda: f"c{next(ids)}", Capacity(cpu=4096.0, memory_mib=1 << 30))
    now = 1000.0
    sched.add_pool("p", PoolConfig(max_containers=n_containers, timeout=60.0), now)
    pool = sched.pools["p"]
    pool.ewma_seconds = 1e-3  # known short inputs: each container prefetches a few
    window = sched._window(pool)
    next_input = itertools.count(1)
    for k in range(n_containers):
        c = Container(f"w{k}", "p", Phase.READY, now, now)
        c.assigned.update(dict.fromkeys(next(next_input) for _ in range(window)))
        sched._mark_running(c, pool.config.max_inputs, now)
        pool.containers[c.id] = c
        sched.containers[c.id] = c
    pool.queue.extend(next(next_input) for _ in range(n_queued))

    def timed(fn, reps: int) -> float:
        samples = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t)
        return statistics.median(samples) * 1e3

    reps = 5 if ctx.quick else 20
    tick = timed(lambda: sched.tick(now + 1.0), reps)
    names = itertools.cycle(list(pool.containers))

    def output() -> None:
        c = pool.containers[next(names)]
        sched.inputs_done(c.id, [next(iter(c.assigned))], 1e-3, now + 1.0)

    done = timed(output, reps * 10)
    submit = timed(lambda: sched.submit("p", [next(next_input)], now + 1.0), reps * 10)
    deadline = timed(sched.next_deadline, reps)
    return [
        row("scheduler_tick", tick, "ms", target="<= 10 ms (10k containers, 1M queued)"),
        row("scheduler_output_pass", done, "ms", target="<= 10 ms"),
        row("scheduler_submit_pass", submit, "ms", target="<= 10 ms"),
        row("scheduler_next_deadline", deadline, "ms", target="<= 10 ms"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (about a minute)")
    parser.add_argument("--only", help=f"comma-separated figures: {', '.join(FIGURES)}")
    parser.add_argument("--json", help="write the rows as JSON to this path")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray peers")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(FIGURES)
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        parser.error(f"unknown figure(s) {unknown}; choose from {list(FIGURES)}")

    from rich.console import Console
    from rich.table import Table

    from homeport.testing import Platform

    # Stopped by a signal (`timeout`, Ctrl-C from another terminal): unwind, so that the private control
    # plane and its containers are stopped rather than left running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))

    console = Console(width=150)
    ctx = Context(args.quick, not args.no_ray)
    rows: list[dict] = []
    try:
        with Platform() as platform:
            ctx.platform = platform
            for name in names:
                console.print(f"[dim]running {name} ...[/dim]")
                try:
                    rows += FIGURES[name](ctx)
                except Exception as exc:  # one broken figure does not lose the others
                    console.print(f"[red]{name} failed: {type(exc).__name__}: {exc}[/red]")
    finally:
        ctx.close()
    table = Table("figure", "Homeport", "unit", "peer", "peer value", "target")
    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:,.3f}" if abs(v) < 10 else f"{v:,.0f}"

    for r in rows:
        table.add_row(r["figure"], fmt(r["value"]), r["unit"], r["peer"] or "-", fmt(r["peer_value"]), r["target"] or "")
    console.print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": {"cpus": os.cpu_count()}, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
