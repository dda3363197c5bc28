"""GPUs on a machine without them (CI), through the test seam for the inventory.

The control plane of each test reads its GPU inventory from `HOMEPORT_TEST_GPU_INVENTORY` (a test seam,
not a user setting): none, or one fake H100 that has no device node; placement, waiting, fallback and
failures are the same as with a real one. A real GPU is exercised by `bench/gpu_device_check.py`.
"""

import ast
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from homeport.server.gpus import TEST_INVENTORY_ENV
from homeport.testing import Platform, homeport_cli

pytestmark = pytest.mark.integration

PROGRAM = Path(__file__).parent / "programs" / "gpu_app.py"
FAKE_H100 = {"index": 0, "uuid": "GPU-fa4e0000-0000-0000-0000-000000000001", "name": "NVIDIA H100 80GB HBM3",
             "memory_mib": 81559}


def _lines(out: str, prefix: str) -> list[str]:
    return [line[len(prefix):].strip() for line in out.splitlines() if line.startswith(prefix)]


def test_an_app_with_gpu_functions_runs_its_cpu_functions_on_a_machine_without_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv(TEST_INVENTORY_ENV, "[]")
    with Platform(str(tmp_path / "p")):
        status = homeport_cli("server", "status")
        assert "GPUs: 0 (NVML found none)" in status.stdout, status.stdout + status.stderr
        out = homeport_cli("run", f"{PROGRAM}::main", timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    (cpu,) = _lines(out.stdout, "cpu:")
    assert ast.literal_eval(cpu)["double"] == 42
    errors = _lines(out.stdout, "error:")
    assert len(errors) == 3, out.stdout + out.stderr
    # What was asked, and what the machine has: never an endless wait.
    assert 'gpu="H100"' in errors[0] and "no GPUs" in errors[0]
    assert 'gpu=["B200", "A100-80GB:2"]' in errors[1] and "no GPUs" in errors[1]
    assert 'gpu="B200:2"' in errors[2]  # a class variant's own request (`with_options`)


def test_gpu_containers_get_their_device_and_wait_while_it_is_held(tmp_path, monkeypatch):
    monkeypatch.setenv(TEST_INVENTORY_ENV, json.dumps([FAKE_H100]))
    with Platform(str(tmp_path / "p")):
        status = homeport_cli("server", "status")
        assert "NVIDIA H100 80GB HBM3 (H100, 81559 MiB)" in status.stdout, status.stdout + status.stderr
        out = homeport_cli("run", f"{PROGRAM}::main", "--snapshot", timeout=180)
        assert out.returncode == 0, out.stdout + out.stderr
        # Snap hooks run with no GPU visible; the container's own is attached after the fork.
        snap = ast.literal_eval(_lines(out.stdout, "snapshot:")[0])
        assert snap["snap"] == {"CUDA_VISIBLE_DEVICES": "", "NVIDIA_VISIBLE_DEVICES": "void"}
        assert snap["enter"] == {"CUDA_VISIBLE_DEVICES": FAKE_H100["uuid"], "NVIDIA_VISIBLE_DEVICES": FAKE_H100["uuid"]}
        cpu = ast.literal_eval(_lines(out.stdout, "cpu:")[0])
        # A CPU container on a GPU machine sees none of its GPUs.
        assert cpu["CUDA_VISIBLE_DEVICES"] == "" and cpu["NVIDIA_VISIBLE_DEVICES"] == "void"
        gpu = ast.literal_eval(_lines(out.stdout, "gpu:")[0])
        assert gpu["CUDA_VISIBLE_DEVICES"] == gpu["NVIDIA_VISIBLE_DEVICES"] == FAKE_H100["uuid"]
        b200, variant = _lines(out.stdout, "error:")
        assert 'gpu=["B200", "A100-80GB:2"]' in b200 and "NVIDIA H100 80GB HBM3" in b200
        assert 'gpu="B200:2"' in variant and "NVIDIA H100 80GB HBM3" in variant

        proc = subprocess.Popen([sys.executable, "-m", "homeport.cli", "run", f"{PROGRAM}::contention",
                                 "--seconds", "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            seen_waiting = False
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and proc.poll() is None and not seen_waiting:
                rows = json.loads(homeport_cli("container", "list", "--json").stdout or "[]")
                seen_waiting = any(r["state"] == "waiting for a GPU" for r in rows)
                held = [g["uuid"] for r in rows for g in r.get("gpus") or ()]
                assert len(held) == len(set(held))  # never two containers on one device
                time.sleep(0.2)
            stdout, stderr = proc.communicate(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, stdout + stderr
    assert seen_waiting, "no container was shown waiting for the GPU"
    a = ast.literal_eval(_lines(stdout, "a:")[0])
    b = ast.literal_eval(_lines(stdout, "b:")[0])
    assert a["CUDA_VISIBLE_DEVICES"] == b["CUDA_VISIBLE_DEVICES"] == FAKE_H100["uuid"]
    first, second = sorted((a, b), key=lambda r: r["start"])
    assert second["start"] >= first["end"]  # the device is exclusive: the second ran after the first
