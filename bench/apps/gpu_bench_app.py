"""The functions `bench/gpu_device_check.py` runs on a machine with a GPU (a module, so that containers
can import it). CUDA work is the driver API through ctypes (`gpu_cuda`), which needs no package."""

import os
import subprocess
import time

from gpu_cuda import cuda_work, try_cuda

import homeport as modal

app = modal.App("gpu-device-check")


def _view() -> dict:
    """What of the GPUs this container sees: its variables, /dev/nvidia* and `nvidia-smi -L`."""
    try:
        smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
        smi_out = (smi.stdout + smi.stderr).strip()
    except (OSError, subprocess.SubprocessError) as exc:
        smi_out = f"nvidia-smi did not run: {exc}"
    nodes = sorted(n for n in os.listdir("/dev") if n.startswith("nvidia"))
    return {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "NVIDIA_VISIBLE_DEVICES": os.environ.get("NVIDIA_VISIBLE_DEVICES"), "dev": nodes, "nvidia_smi_L": smi_out}


@app.function(gpu="any")
def on_any_gpu() -> dict:
    return {"cuda": try_cuda(), **_view()}


@app.function()
def on_cpu(uuid: str) -> dict:
    """Hostile: a CPU container names the GPU's UUID itself and tries CUDA; it must find no device."""
    os.environ["CUDA_VISIBLE_DEVICES"] = uuid
    os.environ.pop("NVIDIA_VISIBLE_DEVICES", None)
    return {"cuda": try_cuda(), **_view()}


@app.function(gpu="any", scaledown_window=2)
def hold_a(seconds: float) -> dict:
    start = time.time()
    cuda_work()
    time.sleep(seconds)
    return {"start": start, "end": time.time(), "gpu": os.environ.get("CUDA_VISIBLE_DEVICES")}


@app.function(gpu="any", scaledown_window=2)
def hold_b(seconds: float) -> dict:
    start = time.time()
    cuda_work()
    time.sleep(seconds)
    return {"start": start, "end": time.time(), "gpu": os.environ.get("CUDA_VISIBLE_DEVICES")}


@app.function(gpu="B200")
def on_b200() -> str:
    return "ran"


@app.cls(gpu="any", scaledown_window=2)
class Fresh:
    @modal.enter()
    def load(self):
        import json  # noqa: F401 - the same imports as the snapshotted class

    @modal.method()
    def first(self) -> dict:
        return cuda_work()


@app.cls(gpu="any", scaledown_window=2, enable_memory_snapshot=True)
class Snapshotted:
    @modal.enter(snap=True)
    def load(self):
        import json  # noqa: F401
        self.at_snapshot = os.environ.get("CUDA_VISIBLE_DEVICES")

    @modal.method()
    def first(self) -> dict:
        return {**cuda_work(), "cuda_visible_at_snapshot": self.at_snapshot}


@app.cls(gpu="any", enable_memory_snapshot=True)
class CudaBeforeSnapshot:
    """Refused: CUDA in a snap=True hook cannot be forked (and sees no GPU there)."""

    @modal.enter(snap=True)
    def load(self):
        self.result = try_cuda()

    @modal.method()
    def first(self) -> dict:
        return self.result
