"""Whether this process loaded the CUDA driver: GPU state cannot be forked, so a snapshot (taken with no
GPU visible) must not have; a container started without its snapshot checks the same after its snap hooks."""

from __future__ import annotations


def cuda_problem() -> str | None:
    """Why this process cannot be a snapshot, if it loaded the CUDA driver."""
    if not _cuda_loaded():
        return None
    return ("the CUDA driver (libcuda) was loaded before the snapshot (cuInit, torch.cuda, cupy ...), and GPU "
            "state cannot be forked (snap=True hooks run with no GPU visible); move GPU work to an "
            "`@modal.enter()` hook without `snap=True`")


def _cuda_loaded() -> bool:
    """Whether this process has mapped the CUDA driver library (it initialised CUDA, or is about to)."""
    try:
        with open("/proc/self/maps") as f:
            return any("libcuda.so" in line for line in f)
    except OSError:
        return False
