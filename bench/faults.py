"""The fault suite's figures: inputs lost, duplicated and failed when things die (issue 12).

    python bench/faults.py [--n 10000] [--kills 10] [--json PATH]

Each scenario runs real processes on a private control plane, like tests/integration/test_faults.py:

- `map_sigkill`: a 10,000-input `.map` (retries=3, 3 containers) while random busy containers are
  SIGKILLed every 0.25 s;
- `startup_sigkill`: a 1,000-input map on a class with a 3 s `@enter`, one container SIGKILLed in it;
- `control_plane_kill9`: 15 spawned calls of a deployed app (a class variant among them), the control
  plane SIGKILLed while they run, then started again; results read with `FunctionCall.from_id`.

Prints one row per scenario: inputs, kills, lost, duplicated, failed, seconds. The target is 0 lost,
0 duplicated, 0 failed by the kills.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
PROGRAM = str(HERE.parent / "tests" / "integration" / "programs" / "faults.py")


def _containers(function: str) -> list[dict]:
    from homeport import _protocol as P
    from homeport._bridge import run_sync
    from homeport._client import get_client

    async def ls():
        return await (await get_client()).request({"t": P.CONTAINER_LIST})

    return [c for c in run_sync(ls()) if c["function"] == function]


def _run(args: list[str], app: str, during) -> tuple[dict, int]:
    """`homeport run faults.py ARGS`, calling `during()` (it returns kills made) while it runs."""
    proc = subprocess.Popen([sys.executable, "-m", "homeport.cli", "run", PROGRAM, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "FAULTS_APP": app})
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
    reader.start()
    err_reader = threading.Thread(target=proc.stderr.read, daemon=True)
    err_reader.start()
    try:
        kills = during(proc)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(5)
        err_reader.join(5)
        proc.stdout.close()
        proc.stderr.close()
    line = next((x for x in out if x.startswith("FAULTS ")), None)
    if line is None:
        raise RuntimeError(f"the program printed no counts (exit {proc.returncode})")
    return json.loads(line[len("FAULTS "):]), kills


def map_sigkill(n: int, max_kills: int) -> dict:
    rng = random.Random(1)

    def killer(proc) -> int:
        kills = 0
        while proc.poll() is None and kills < max_kills:
            busy = [c for c in _containers("square") if c["state"] == "ready" and c["running"] and c["pid"]]
            if busy:
                try:
                    os.kill(rng.choice(busy)["pid"], signal.SIGKILL)
                    kills += 1
                except ProcessLookupError:
                    pass
            time.sleep(0.25)
        return kills

    counts, kills = _run(["--which", "map", "--n", str(n)], "faults-map", killer)
    return {**counts, "kills": kills}


def startup_sigkill() -> dict:
    def killer(proc) -> int:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            rows = [c for c in _containers("SlowStart") if c["state"] == "starting" and c["pid"]]
            if rows:
                os.kill(rows[0]["pid"], signal.SIGKILL)
                return 1
            time.sleep(0.05)
        return 0

    counts, kills = _run(["--which", "startup", "--n", "1000"], "faults-startup", killer)
    return {**counts, "kills": kills}


def control_plane_kill9(platform) -> dict:
    import psutil

    import homeport as modal
    from homeport.testing import homeport_cli

    out = homeport_cli("deploy", PROGRAM, env={**os.environ, "FAULTS_APP": "faults-dep"})
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    t = time.monotonic()
    f = modal.Function.from_name("faults-dep", "slow_square")
    calls = [(f.spawn(i, 1.0), i * i) for i in range(12)]
    scaled = modal.Cls.from_name("faults-dep", "Scaled")(factor=3)
    calls += [(scaled.times.spawn(i, 3.0), 3 * i) for i in range(3)]
    deadline = time.monotonic() + 30
    while not any(c["running"] for c in _containers("slow_square")) and time.monotonic() < deadline:
        time.sleep(0.05)
    procs = platform.server_processes()
    os.kill(platform.pid, signal.SIGKILL)
    _gone, alive = psutil.wait_procs(procs, timeout=15)
    for p in alive:
        p.kill()
    platform.start()
    results, failed = [], 0
    for call, _ in calls:
        try:
            results.append(modal.FunctionCall.from_id(call.object_id).get(timeout=120))
        except Exception:
            failed += 1
            results.append(None)
    expected = [e for _, e in calls]
    got = [r for r in results if r is not None]
    return {"inputs": len(calls), "outputs": len(got) + failed, "failed": failed,
            "lost": sum(1 for r, e in zip(results, expected) if r != e) - failed,
            "duplicated": 0,  # one result per call id by construction; a re-run replaces, never adds
            "kills": 1, "seconds": time.monotonic() - t}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--json")
    args = parser.parse_args()

    from homeport.testing import Platform

    rows = []
    with Platform() as platform:
        rows.append({"scenario": "map_sigkill", **map_sigkill(args.n, args.kills)})
        rows.append({"scenario": "startup_sigkill", **startup_sigkill()})
    with Platform() as platform:
        rows.append({"scenario": "control_plane_kill9", **control_plane_kill9(platform)})
    keys = ("scenario", "inputs", "kills", "lost", "duplicated", "failed", "seconds")
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(f"{r[k]:.1f}" if k == "seconds" else str(r[k]) for k in keys))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
