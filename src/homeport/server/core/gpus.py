"""GPUs as the scheduler sees them: the machine's devices, what a function asks for, and which fit.

Pure: the inventory comes from `homeport.server.gpus` (NVML) or from a test's fake one.

A request is Modal's `gpu=` after `parse_gpu_config`: a tuple of `"TYPE:COUNT"` in order of preference
(a fallback list). A device is whole and exclusive: a container holds `count` devices of one entry's
type, and no other container uses them until it exits.

Modal's upgrade rules, applied to the devices of this machine:

- `A100` means 40 GB and may run on an 80 GB card; `A100-40GB` and `A100-80GB` are strict;
- `H100` may run on an H200; `H100!` never does;
- `B200+` runs on a B200 or a B300;
- `A10` and `A10G` are one type;
- `ANY` (Homeport's decision, unlike Modal's L4/A10/T4) is any GPU of this machine, whatever its model.

An exact model is preferred to an upgrade when both are free (an `H100` request takes an H100 before
an H200).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# What each request type may run on, best first; `None` (ANY) is any device.
ACCEPTS: dict[str, tuple[str, ...] | None] = {
    "T4": ("T4",),
    "L4": ("L4",),
    "A10": ("A10",),
    "A10G": ("A10",),
    "L40S": ("L40S",),
    "A100": ("A100-40GB", "A100-80GB"),
    "A100-40GB": ("A100-40GB",),
    "A100-80GB": ("A100-80GB",),
    "RTX-PRO-6000": ("RTX-PRO-6000",),
    "H100": ("H100", "H200"),
    "H100!": ("H100",),
    "H200": ("H200",),
    "B200": ("B200",),
    "B200+": ("B200", "B300"),
    "ANY": None,
}


@dataclass(frozen=True)
class GpuDevice:
    """One device of the machine: its NVML index, UUID, model name as NVML reports it, memory, and the
    Modal type it counts as (None: a model Modal has no name for; only `ANY` runs on it)."""

    index: int
    uuid: str
    name: str
    memory_mib: int
    model: str | None

    def describe(self) -> str:
        kind = self.model or "unnamed model"
        return f"GPU {self.index}: {self.name} ({kind}, {self.memory_mib} MiB)"


def modal_model(name: str, memory_mib: int = 0) -> str | None:
    """The Modal GPU type of an NVML device name ("NVIDIA H100 80GB HBM3" → "H100"), None if none fits."""
    n = name.upper().replace("NVIDIA", " ").replace("TESLA", " ")
    words = n.replace("-", " ").split()
    if "RTX" in words and "PRO" in words and "6000" in words:
        return "RTX-PRO-6000"
    for token, model in (("B300", "B300"), ("B200", "B200"), ("H200", "H200"), ("H100", "H100"), ("H800", None),
                         ("L40S", "L40S"), ("A10G", "A10"), ("A10", "A10"), ("L4", "L4"), ("T4", "T4")):
        if token in words:
            return model
    if "A100" in words:
        if "80GB" in words or (memory_mib and memory_mib > 60 * 1024):
            return "A100-80GB"
        return "A100-40GB"
    return None


def parse_request(gpu: Sequence[str] | None) -> tuple[tuple[str, int], ...]:
    """`("A100:2", "T4:1")` → `(("A100", 2), ("T4", 1))`; already validated at decoration."""
    out = []
    for entry in gpu or ():
        kind, _, count = entry.partition(":")
        out.append((kind.upper(), int(count or 1)))
    return tuple(out)


def describe_request(request: Sequence[tuple[str, int]]) -> str:
    """As the user wrote it: `gpu="H100:2"` or `gpu=["H100", "A100-40GB:2"]`."""
    items = [kind if count == 1 else f"{kind}:{count}" for kind, count in request]
    if len(items) == 1:
        return f'gpu="{items[0]}"'
    return "gpu=[" + ", ".join(f'"{i}"' for i in items) + "]"


def describe_inventory(devices: Sequence[GpuDevice]) -> str:
    if not devices:
        return "this machine has no GPUs (NVML found none)"
    return "this machine has " + "; ".join(d.describe() for d in devices)


def _rank(kind: str, device: GpuDevice) -> int | None:
    """Where the device stands among what `kind` accepts (0: the exact model), None if not at all."""
    accepts = ACCEPTS.get(kind)
    if accepts is None:
        return 0 if kind == "ANY" else None
    try:
        return accepts.index(device.model)
    except ValueError:
        return None


def matching(kind: str, devices: Iterable[GpuDevice]) -> list[GpuDevice]:
    """The devices a request entry of type `kind` may run on, best first (exact model, then by index)."""
    ranked = [(r, d.index, d) for d in devices if (r := _rank(kind, d)) is not None]
    return [d for _, _, d in sorted(ranked, key=lambda t: (t[0], t[1]))]


def choose(request: Sequence[tuple[str, int]], devices: Sequence[GpuDevice],
           busy: set[str]) -> tuple[str, ...] | None:
    """The UUIDs a new container gets: `count` free devices of the first entry that has them."""
    for kind, count in request:
        free = [d for d in matching(kind, devices) if d.uuid not in busy]
        if len(free) >= count:
            return tuple(d.uuid for d in free[:count])
    return None


def infeasible(request: Sequence[tuple[str, int]], devices: Sequence[GpuDevice]) -> str | None:
    """Why no device of this machine can ever run the request (even all free), None if some can."""
    if any(len(matching(kind, devices)) >= count for kind, count in request):
        return None
    return f"it requests {describe_request(request)} but {describe_inventory(devices)}"


def max_containers(request: Sequence[tuple[str, int]], devices: Sequence[GpuDevice]) -> int:
    """At most how many containers of the request can hold their devices at once on this machine."""
    left = list(devices)
    total = 0
    for kind, count in request:  # each entry takes what it can of what the ones before it left
        free = matching(kind, left)
        n = len(free) // count
        taken = {d.uuid for d in free[: n * count]}
        left = [d for d in left if d.uuid not in taken]
        total += n
    return total
