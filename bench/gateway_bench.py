"""The web endpoint gateway against its peer: the same FastAPI app served by uvicorn directly.

    python bench/gateway_bench.py [--duration 10] [--connections 32] [--threads 1] [--rounds 2]

Starts, side by side:
(a) direct: a trivial FastAPI `GET /` served by uvicorn on TCP 127.0.0.1 (one process, httptools, uvloop,
    no access log) -- the peer;
(b) gateway: the same app served by uvicorn on a Unix socket in one process, behind homeport's Gateway
    running with uvloop in another (acquire hands out that socket at once, as with a warm container).

After a warm-up of each, wrk loads them in turn, alternating, `--rounds` times: with `--connections`
(throughput, and latency under load) and with one connection (the latency the extra hop adds). The
tables show the best run of each (requests/s, p50 and p99 latency), then the gateway's throughput as a
share of direct and the p50 it adds. Targets: gateway >= 70% of direct throughput, <= 1 ms added p50.
wrk, the servers and the gateway share the machine's cores, so on a small machine the figures move with
whatever else runs, and a loaded gateway can beat direct: its upstream does Unix socket I/O instead of
TCP, and the gateway gets a core that a single uvicorn process cannot use.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


def make_app():
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/")
    async def root():
        return {"hello": "world"}

    return app


# --- the processes under test ----------------------------------------------------------------------
def serve_direct(port: int) -> None:
    import uvicorn

    uvicorn.run(make_app(), host="127.0.0.1", port=port, http="httptools", loop="uvloop",
                access_log=False, log_level="warning", lifespan="off")


def serve_upstream(path: str) -> None:
    import uvicorn

    uvicorn.run(make_app(), uds=path, http="httptools", loop="uvloop", access_log=False,
                log_level="warning", lifespan="off")


def serve_gateway(port: int, path: str) -> None:
    import asyncio

    import uvloop

    sys.path.insert(0, str(SRC))
    from homeport.server.gateway import Endpoint, Gateway, Upstream

    def release() -> None:
        pass

    async def acquire() -> Upstream:
        return Upstream(path, release)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        gateway = Gateway()
        await gateway.open(port)
        gateway.route(port, Endpoint("bench app function 'root'", acquire))
        await stop.wait()
        await gateway.close()

    uvloop.run(main())


# --- driving them ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, *args])


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_ready(url: str, procs: list[subprocess.Popen], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise SystemExit(f"a server exited early with status {p.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {seconds:g} s")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(url: str, duration: int, connections: int, threads: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    if not (rps and p50 and p99):
        raise SystemExit(f"could not parse wrk output:\n{out}")
    if errors:
        print(f"wrk reported errors against {url}: {errors.group(0)}", file=sys.stderr)
    return {"rps": float(rps.group(1)), "p50": _ms(p50.group(1)), "p99": _ms(p99.group(1))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2,
                        help="wrk runs per setup, alternating; the best is reported (other load on the machine "
                             "only ever makes a run slower)")
    parser.add_argument("--role", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        role, *rest = args.role
        {"direct": lambda: serve_direct(int(rest[0])),
         "upstream": lambda: serve_upstream(rest[0]),
         "gateway": lambda: serve_gateway(int(rest[0]), rest[1])}[role]()
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed")

    tmp = tempfile.mkdtemp(prefix="hpbench")
    path = os.path.join(tmp, "web.sock")
    direct_port, gateway_port = free_port(), free_port()
    procs = [start("--role", "direct", str(direct_port)), start("--role", "upstream", path),
             start("--role", "gateway", str(gateway_port), path)]
    setups = {"direct (uvicorn, TCP)": f"http://127.0.0.1:{direct_port}/",
              "gateway (uvicorn, Unix socket)": f"http://127.0.0.1:{gateway_port}/"}
    # Loaded (throughput, and latency under load) and one connection at a time (the latency a hop adds).
    loads = {"loaded": (args.connections, args.threads, args.duration), "serial": (1, 1, min(args.duration, 5))}
    runs: dict[tuple[str, str], list[dict[str, float]]] = {(load, name): [] for load in loads for name in setups}
    try:
        for url in setups.values():
            wait_ready(url, procs)
            wrk(url, 2, args.connections, args.threads)  # warm-up
        for _ in range(args.rounds):
            for load, (connections, threads, duration) in loads.items():
                for name, url in setups.items():
                    runs[load, name].append(wrk(url, duration, connections, threads))
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nGET / -> {{\"hello\": \"world\"}}, best of {args.rounds} alternating wrk runs each")
    best = {}
    for load, (connections, threads, duration) in loads.items():
        print(f"\nwrk -t{threads} -c{connections} -d{duration}s")
        print(f"{'':32} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8}   all runs (req/s)")
        for name in setups:
            rs = runs[load, name]
            b = best[load, name] = max(rs, key=lambda r: r["rps"])
            every = ", ".join(f"{r['rps']:.0f}" for r in rs)
            print(f"{name:32} {b['rps']:>10.0f} {b['p50']:>8.3f} {b['p99']:>8.3f}   {every}")
    direct, gateway = setups
    d, g, d1, g1 = (best[load, name] for load in loads for name in (direct, gateway))
    print(f"\ngateway/direct throughput (loaded): {g['rps'] / d['rps']:.0%} (target >= 70%)")
    print(f"added p50: {g['p50'] - d['p50']:+.3f} ms loaded, {g1['p50'] - d1['p50']:+.3f} ms serial (target <= 1 ms)")


if __name__ == "__main__":
    main()
