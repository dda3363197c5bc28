"""What of the host's NVIDIA driver a container sees (pure functions, and bubblewrap with a made-up /dev),
the inventory's test seam, and a snapshot's view of GPUs. No GPU needed."""

import json
import os
import shutil
import subprocess

import pytest

from homeport.backends import Mount
from homeport.backends.local import _gpu, _rootfs, _sandbox
from homeport.server import gpus as inventory
from homeport.server.templates import NO_GPU_ENV, container_template

HOST = [("null", None), ("zero", None), ("pts", None), ("shm", None), ("fd", "/proc/self/fd"),
        ("nvidia0", None), ("nvidia1", None), ("nvidia3", None), ("nvidiactl", None), ("nvidia-uvm", None),
        ("nvidia-uvm-tools", None), ("nvidia-modeset", None), ("nvidia-caps", None)]


def names(entries):
    return sorted(e.name for e in entries)


def test_a_gpu_container_sees_its_own_gpu_nodes_and_the_control_nodes_only():
    got = names(_gpu.dev_entries(HOST, [1]))
    assert "nvidia1" in got and "nvidia0" not in got and "nvidia3" not in got
    assert {"nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset", "nvidia-caps"} <= set(got)
    assert {"null", "zero", "pts", "shm", "fd"} <= set(got)
    assert names(_gpu.dev_entries(HOST, [0, 3])).count("nvidia1") == 0


def test_a_container_without_gpus_sees_no_nvidia_node_at_all():
    got = names(_gpu.dev_entries(HOST, []))
    assert not [n for n in got if n.startswith("nvidia")]
    assert _gpu.has_gpu_nodes(n for n, _ in HOST) and not _gpu.has_gpu_nodes(["null", "nvme0"])


def test_bwrap_dev_arguments_bind_only_the_chosen_entries():
    args = _gpu.bwrap_dev_args(_gpu.dev_entries(HOST, [3]))
    assert args[:2] == ["--tmpfs", "/dev"]
    assert "/dev/nvidia0" not in args and "/dev/nvidia1" not in args
    assert args[args.index("/dev/nvidia3") - 1] == "--dev-bind"
    assert ["--symlink", "/proc/self/fd", "/dev/fd"] == args[args.index("/dev/fd") - 2:args.index("/dev/fd") + 1]
    wrapped = _sandbox.wrap(["true"], (), None, None, dev=_gpu.dev_entries(HOST, [3])) if shutil.which("bwrap") \
        else None
    if wrapped is not None:
        assert "--dev-bind" not in wrapped[wrapped.index("--proc"):wrapped.index("--proc") + 4]


def test_root_file_system_gets_its_own_dev_and_the_driver_files_read_only():
    spec = _gpu.rootfs_dev_spec(_gpu.dev_entries(HOST, [0]))
    parts = spec.split("/")
    assert "nvidia0" in parts and "nvidia1" not in parts and "fd>" in spec and "nvidiactl" in parts
    fs = json.dumps({"lower": ["/l"], "scratch": "/s", "cwd": "/"})
    argv = _rootfs.wrap(["true"], fs, [], dev=_gpu.dev_entries(HOST, [0]))
    assert spec in argv
    # no GPU nodes asked for: a /dev of its own with only the harmless nodes, never the host's
    assert _rootfs.wrap(["true"], fs, [])[argv.index(spec)] == "minimal"
    mounts = _gpu.driver_mounts([("/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libcuda.so.550.1"),
                                 ("/usr/bin/nvidia-smi", "/usr/bin/nvidia-smi")])
    assert Mount("/usr/lib/x86_64-linux-gnu/libcuda.so.550.1", "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
                 read_only=True) in mounts
    assert all(m.read_only for m in mounts)
    assert _gpu.with_driver((), None, [0]) == () and _gpu.with_driver((), fs, []) == ()


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
def test_bubblewrap_builds_the_chosen_dev(tmp_path):
    """The arguments really run: /dev inside holds the chosen entries and nothing else of the host's."""
    host = [(n, os.readlink(f"/dev/{n}") if os.path.islink(f"/dev/{n}") else None)
            for n in ("null", "zero", "urandom", "fd") if os.path.exists(f"/dev/{n}")]
    argv = _sandbox.wrap(["ls", "/dev"], [], None, None, dev=_gpu.dev_entries(host, []))
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if out.returncode != 0 and "namespace" in out.stderr.lower():
        pytest.skip(f"bubblewrap cannot make namespaces here: {out.stderr.strip()}")
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.split()) == sorted(n for n, _ in host)


def test_inventory_test_seam_and_no_nvml_means_no_gpus(monkeypatch):
    monkeypatch.setenv(inventory.TEST_INVENTORY_ENV, json.dumps(
        [{"index": 2, "uuid": "GPU-x", "name": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920}]))
    (d,) = inventory.discover()
    assert (d.index, d.uuid, d.model) == (2, "GPU-x", "A100-80GB")
    assert inventory.as_rows((d,))[0]["model"] == "A100-80GB"
    assert inventory.usage(["GPU-x"]) == {}  # fake devices have no use to report
    monkeypatch.setenv(inventory.TEST_INVENTORY_ENV, "[]")
    assert inventory.discover() == ()


def test_a_snapshot_template_of_a_gpu_function_holds_the_nodes_but_cuda_sees_no_gpu():
    env = {"A": "1", "CUDA_VISIBLE_DEVICES": "GPU-a", "NVIDIA_VISIBLE_DEVICES": "GPU-a"}
    definition = {"snapshot": True, "qualname": "f"}
    t = container_template(definition, ("python",), env, {}, salt=b"k", gpus=(0, 1))
    assert t.gpus == (0, 1)
    assert t.env["CUDA_VISIBLE_DEVICES"] == NO_GPU_ENV["CUDA_VISIBLE_DEVICES"] == ""
    assert t.env["NVIDIA_VISIBLE_DEVICES"] == "void" and t.env["A"] == "1"
    # Containers given other GPUs share the one snapshot: their devices are theirs after the fork.
    other = container_template(definition, ("python",), {**env, "CUDA_VISIBLE_DEVICES": "GPU-b"}, {}, salt=b"k",
                               gpus=(0, 1))
    assert other.key == t.key


def test_the_snapshot_refuses_a_process_that_loaded_the_cuda_driver(monkeypatch):
    from homeport.runtime import _cuda, _snapshot_check

    monkeypatch.setattr(_snapshot_check, "_inet_sockets", lambda: [])  # this test process's own sockets aside
    monkeypatch.setattr(_cuda, "_cuda_loaded", lambda: True)
    assert "CUDA driver (libcuda) was loaded before the snapshot" in _snapshot_check.cuda_problem()
    assert _snapshot_check.cuda_problem() in _snapshot_check.snapshot_problems()
    monkeypatch.setattr(_cuda, "_cuda_loaded", lambda: False)
    assert _snapshot_check.cuda_problem() is None
    assert not any("libcuda" in p for p in _snapshot_check.snapshot_problems())


def test_driver_libraries_outside_the_linker_cache_reach_gpu_containers_only(monkeypatch):
    monkeypatch.setattr(_gpu, "_driver_files", [("/usr/local/nvidia/lib64/libcuda.so.1", "/x")])
    monkeypatch.setattr(_gpu, "_extra_dirs", ["/usr/local/nvidia/lib64"])
    assert _gpu.library_env({"A": "1"}, []) == {"A": "1"}
    assert _gpu.library_env({"LD_LIBRARY_PATH": "/opt/lib"}, [0])["LD_LIBRARY_PATH"] == "/opt/lib:/usr/local/nvidia/lib64"
