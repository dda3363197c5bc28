"""Issue 17 on a machine with an NVIDIA GPU: one command, prints a PASS/FAIL/SKIP table and the timings.

    python3 bench/gpu_device_check.py [--json PATH]

On a private control plane (homeport.testing.Platform, stopped at the end) it:

1. lists the inventory (`homeport server status`): NVML's devices and their Modal types;
2. runs a `gpu="any"` function doing CUDA driver API work through ctypes (cuInit, cuDeviceGetName,
   cuMemAlloc, a tiny PTX kernel, copy back) and checks its result, that `nvidia-smi -L` inside lists
   one device, and that only its own /dev/nvidiaN is there;
3. hostile: a CPU container sets CUDA_VISIBLE_DEVICES to the GPU's UUID itself: it must find no device;
4. a second GPU container waits ("waiting for a GPU" in `container list`) while the first holds the
   only GPU, and runs after it;
5. `gpu="B200"` fails at call time, naming the request and this machine's GPU (on an H100/H200);
6. a snap=True hook that initialises CUDA is refused with the reason;
7. times the first CUDA result in a new container without and with a memory snapshot, against a plain
   subprocess doing the same CUDA work (the floor), each the median of a few runs.

With no GPU (NVML finds none) the GPU rows are skipped with a note. On the lent device machine, where
nothing can be fetched, Homeport's dependencies travel as wheels (see bench/README.md, "GPU check").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "apps"))
sys.path.insert(0, str(HERE.parent / "src"))

ROWS: list[dict] = []


def row(check: str, status: str, detail: str = "", **values) -> None:
    ROWS.append({"check": check, "status": status, "detail": detail, **values})
    print(f"{status:5} {check}: {detail}", flush=True)


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "homeport.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def containers() -> list[dict]:
    out = cli("container", "list", "--json")
    return json.loads(out.stdout or "[]")


def wait_idle(timeout: float = 60) -> None:
    """Until no container of the check holds a GPU (a new run's first container must not wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not [r for r in containers() if r.get("gpus") or r["state"] == "waiting for a GPU"]:
            return
        time.sleep(0.2)


def floor_subprocess(n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, str(HERE / "apps" / "gpu_cuda.py")], capture_output=True, text=True,
                             timeout=120)
        times.append(time.perf_counter() - t0)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        if not result.get("correct"):
            raise RuntimeError(f"plain subprocess CUDA work failed: {result}")
    return times


def check_cuda(g, inventory) -> None:
    """CUDA driver API in a gpu='any' container"""
    r = g.on_any_gpu.remote()
    cuda = r["cuda"]
    ok = cuda.get("correct") is True and cuda.get("devices_visible") == 1
    row("CUDA driver API in a gpu='any' container", "PASS" if ok else "FAIL", json.dumps(cuda))
    smi_gpus = [line for line in r["nvidia_smi_L"].splitlines() if line.startswith("GPU ")]
    row("nvidia-smi -L inside shows one device", "PASS" if len(smi_gpus) == 1 else "FAIL", r["nvidia_smi_L"])
    mine = f"nvidia{inventory[0].index}"
    others = [n for n in r["dev"] if n.removeprefix("nvidia").isdigit() and n != mine]
    row("only its own /dev/nvidiaN", "PASS" if not others else "FAIL",
        f"dev={r['dev']} CUDA_VISIBLE_DEVICES={r['CUDA_VISIBLE_DEVICES']}")


def check_hostile(g, inventory) -> None:
    """CPU container naming the GPU's UUID finds no device"""
    c = g.on_cpu.remote(inventory[0].uuid)
    refused = "error" in c["cuda"] and not [n for n in c["dev"] if n.removeprefix("nvidia").isdigit()]
    row("CPU container naming the GPU's UUID finds no device", "PASS" if refused else "FAIL",
        f"cuda={c['cuda']} dev={c['dev']}")


def check_waiting(g, inventory) -> None:
    """second GPU container waits for the only GPU"""
    if len(inventory) != 1:
        row("second GPU container waits for the only GPU", "SKIP", f"{len(inventory)} GPUs here, not one")
        return
    a = g.hold_a.spawn(6.0)
    time.sleep(1.0)
    b = g.hold_b.spawn(1.0)
    seen = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not seen:
        seen = any(x["state"] == "waiting for a GPU" for x in containers())
        time.sleep(0.2)
    ra, rb = a.get(timeout=180), b.get(timeout=180)
    after = rb["start"] >= ra["end"]
    row("second GPU container waits for the only GPU", "PASS" if seen and after else "FAIL",
        f"seen waiting={seen}; a {ra['start']:.2f}-{ra['end']:.2f}, b starts {rb['start']:.2f}")


def check_b200(g, inventory) -> None:
    """gpu='B200' fails clearly"""
    if any(d.model in ("B200", "B300") for d in inventory):
        row("gpu='B200' fails clearly", "SKIP", "this machine has a B200")
        return
    try:
        g.on_b200.remote()
        row("gpu='B200' fails clearly", "FAIL", "it ran")
    except Exception as exc:
        text = str(exc)
        ok = 'gpu="B200"' in text and inventory[0].name in text
        row("gpu='B200' fails clearly", "PASS" if ok else "FAIL", text)


def check_cuda_before_snapshot(g, inventory) -> None:
    """CUDA in a snap=True hook is refused"""
    try:
        res = g.CudaBeforeSnapshot().first.remote()
        row("CUDA in a snap=True hook is refused", "FAIL", f"ran: {res}")
    except Exception as exc:
        ok = "libcuda" in str(exc) and "snapshot" in str(exc)
        row("CUDA in a snap=True hook is refused", "PASS" if ok else "FAIL", str(exc)[:400])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=os.path.join(os.environ.get("OUT", "."), "gpu_device_check.json"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    from homeport.server.gpus import discover
    from homeport.testing import Platform

    inventory = discover()
    print(f"NVML inventory: {[(d.index, d.name, d.model, d.memory_mib) for d in inventory]}", flush=True)
    if not inventory:
        row("gpu rows", "SKIP", "NVML found no GPU on this machine: nothing to check; run it where there is one")
        Path(args.json).write_text(json.dumps(ROWS, indent=1))
        return 0
    try:
        floor = floor_subprocess(args.repeat)
        row("plain subprocess CUDA (floor)", "PASS", f"median {statistics.median(floor) * 1e3:.0f} ms",
            ms=[t * 1e3 for t in floor])
    except Exception as exc:
        row("plain subprocess CUDA (floor)", "FAIL", str(exc))
        floor = []

    import gpu_bench_app as g

    with Platform():
        st = cli("server", "status")
        gpu_lines = [line for line in st.stdout.splitlines() if "GPU" in line or " MiB) GPU-" in line]
        row("server status lists GPUs", "PASS" if len(gpu_lines) > len(inventory) - 1 else "FAIL", " | ".join(gpu_lines))
        with g.app.run(show_logs=False):
            for check in (check_cuda, check_hostile, check_waiting, check_b200, check_cuda_before_snapshot):
                try:
                    check(g, inventory)
                except Exception as exc:
                    row(check.__doc__ or check.__name__, "FAIL", f"{type(exc).__name__}: {str(exc)[:400]}")
        wait_idle()

        # 7. first CUDA result in a new container: new app run each time (the first run of each warms
        # the image, the runtime template and, for Snapshotted, takes the snapshot)
        def first_result(cls) -> tuple[float, dict]:
            wait_idle()
            t0 = time.perf_counter()
            with g.app.run(show_logs=False):
                res = cls().first.remote()
            return time.perf_counter() - t0, res

        for name, cls in (("without snapshot", g.Fresh), ("with memory snapshot", g.Snapshotted)):
            try:
                first_result(cls)  # warm-up (and the snapshot)
                runs = [first_result(cls) for _ in range(args.repeat)]
                ok = all(r.get("correct") for _, r in runs)
                ms = [t * 1e3 for t, _ in runs]
                extra = f"; CUDA_VISIBLE_DEVICES at snapshot: {runs[0][1].get('cuda_visible_at_snapshot')!r}" \
                    if cls is g.Snapshotted else ""
                floor_ms = statistics.median(floor) * 1e3 if floor else float("nan")
                row(f"first CUDA result, new container, {name}", "PASS" if ok else "FAIL",
                    f"median {statistics.median(ms):.0f} ms (app run to result; floor {floor_ms:.0f} ms){extra}",
                    ms=ms)
            except Exception as exc:
                row(f"first CUDA result, new container, {name}", "FAIL", f"{type(exc).__name__}: {exc}")
    Path(args.json).write_text(json.dumps(ROWS, indent=1))
    failed = [r for r in ROWS if r["status"] == "FAIL"]
    print(f"\n{len(ROWS)} checks, {len(failed)} failed; rows in {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
