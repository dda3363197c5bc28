"""`gpu=` functions, run with `homeport run` on a control plane whose GPU inventory is given
by the test (a fake one, or none)."""

import os
import time

import modal  # resolves to Homeport under `homeport run`

app = modal.App("gpu-app")


def _gpu_env() -> dict:
    return {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")}


@app.function()
def on_cpu(x: int) -> dict:
    return {"double": 2 * x, **_gpu_env()}


@app.function(gpu="H100")
def on_h100() -> dict:
    return _gpu_env()


@app.function(gpu=["B200", "A100-80GB:2"])
def on_b200() -> dict:
    return _gpu_env()


@app.function(gpu="any", scaledown_window=2)
def hold_a(seconds: float) -> dict:
    start = time.time()
    time.sleep(seconds)
    return {"start": start, "end": time.time(), **_gpu_env()}


@app.function(gpu="any", scaledown_window=2)
def hold_b(seconds: float) -> dict:
    start = time.time()
    time.sleep(seconds)
    return {"start": start, "end": time.time(), **_gpu_env()}


@app.cls(gpu="any", enable_memory_snapshot=True)
class Snapshotted:
    @modal.enter(snap=True)
    def before_snapshot(self):
        self.at_snapshot = _gpu_env()

    @modal.enter()
    def after_fork(self):
        self.at_enter = _gpu_env()

    @modal.method()
    def seen(self) -> dict:
        return {"snap": self.at_snapshot, "enter": self.at_enter}


@app.local_entrypoint()
def main(snapshot: bool = False):
    if snapshot:
        print("snapshot:", Snapshotted().seen.remote())
    print("cpu:", on_cpu.remote(21))
    for fn in (on_h100, on_b200, Snapshotted.with_options(gpu="b200:2")().seen):
        try:
            print("gpu:", fn.remote())
        except Exception as exc:
            print(f"error: {type(exc).__name__}: {exc}")


@app.local_entrypoint()
def contention(seconds: float = 3.0):
    a = hold_a.spawn(seconds)
    b = hold_b.spawn(seconds)
    print("a:", a.get(timeout=120))
    print("b:", b.get(timeout=120))
