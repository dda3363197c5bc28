"""The machine's GPUs, read with NVML (`nvidia-ml-py`) when the control plane starts, and their use.

No NVML library (no NVIDIA driver) or no device means an empty inventory, never an error: functions
with `gpu=` then fail at call time, saying what they asked for and that the machine has none.

Test seam (not a user setting): the test harness may set `HOMEPORT_TEST_GPU_INVENTORY` to a JSON list
of devices (`[{"index": 0, "uuid": "GPU-...", "name": "NVIDIA H100 80GB HBM3", "memory_mib": 81559}]`,
or `[]`) to replace what NVML reports, so that placement can be tested on a machine without GPUs (or
with a known empty inventory on one that has them). Fake devices have no device nodes: a container
given one sees its UUID in `CUDA_VISIBLE_DEVICES` and nothing else.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from .core.gpus import GpuDevice, modal_model

log = logging.getLogger("homeport.server")

TEST_INVENTORY_ENV = "HOMEPORT_TEST_GPU_INVENTORY"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def discover() -> tuple[GpuDevice, ...]:
    """The machine's GPUs (the test seam's, when set)."""
    fake = os.environ.get(TEST_INVENTORY_ENV)
    if fake is not None:
        return tuple(
            GpuDevice(int(d["index"]), d["uuid"], d["name"], int(d["memory_mib"]),
                      d.get("model", modal_model(d["name"], int(d["memory_mib"]))))
            for d in json.loads(fake)
        )
    try:
        import pynvml
    except ImportError:
        return ()
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # no driver, no library, no permission: no GPUs
        log.info("no GPUs: NVML is not available (%s)", exc)
        return ()
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = _text(pynvml.nvmlDeviceGetName(h))
            memory = int(pynvml.nvmlDeviceGetMemoryInfo(h).total) // (1 << 20)
            minor = pynvml.nvmlDeviceGetMinorNumber(h)
            out.append(GpuDevice(minor if minor is not None else i, _text(pynvml.nvmlDeviceGetUUID(h)), name,
                                 memory, modal_model(name, memory)))
        return tuple(out)
    except Exception as exc:
        log.warning("reading the GPU inventory failed: %s", exc)
        return ()
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def usage(uuids: list[str]) -> dict[str, dict[str, int]]:
    """Memory used (MiB) and utilisation (%) of each GPU, by UUID, where NVML can tell; a container's
    GPUs are its own (exclusive), so a device's use is its container's. Empty without NVML."""
    if not uuids or os.environ.get(TEST_INVENTORY_ENV) is not None:
        return {}
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return {}
    out: dict[str, dict[str, int]] = {}
    try:
        for uuid in uuids:
            try:
                h = pynvml.nvmlDeviceGetHandleByUUID(uuid.encode() if isinstance(uuid, str) else uuid)
                mem = pynvml.nvmlDeviceGetMemoryInfo(h)
                entry = {"memory_used_mib": int(mem.used) // (1 << 20), "memory_total_mib": int(mem.total) // (1 << 20)}
                try:
                    entry["utilization_pct"] = int(pynvml.nvmlDeviceGetUtilizationRates(h).gpu)
                except Exception:
                    pass
                out[uuid] = entry
            except Exception:
                continue
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
    return out


def as_rows(devices: tuple[GpuDevice, ...]) -> list[dict[str, Any]]:
    return [{"index": d.index, "uuid": d.uuid, "name": d.name, "memory_mib": d.memory_mib, "model": d.model}
            for d in devices]
