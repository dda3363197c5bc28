"""Where a container may run on a Ray cluster: Modal's requests translated to Ray's actor options.

Pure: given a container's `Placement` and the cluster's nodes (as `ray.nodes()` lists them), return the
options for `ActorClass.options(...)`, or raise `Unplaceable` saying what was asked and what the cluster
has, so a request no node can ever satisfy fails at once instead of waiting as a pending actor forever.

- `cpu` -> `num_cpus`, `memory` -> `memory` (bytes).
- `gpu="A100:2"` -> `num_gpus=2` and a label selector on `ray.io/accelerator-type` that encodes Modal's
  upgrade rules (`A100` may run on 40 or 80 GB, `H100` on an H200, `H100!` never, `B200+` on a B300).
  Ray names accelerators its own way (`A100-80G`, `A10G`): `RAY_ACCELERATORS` maps them. A list is an
  ordered fallback: the first entry is the label selector, the rest Ray's `fallback_strategy` (Ray
  >= 2.49), when every entry asks for the same count; otherwise (Ray's fallback cannot change the count)
  the first entry some node can hold now is chosen, else the first some node could ever hold.
- `region=` (a string or a list) is a set of acceptable regions with no order; a broad name covers the
  narrow ones under it (`us` covers `us-east-1`), as Modal documents. Nodes carry their region in the
  `homeport.io/region` label (`ray start --labels homeport.io/region=us-east-1`); the request becomes an
  `in(...)` selector over the regions of the cluster's nodes that match.
"""

from __future__ import annotations

from typing import Any

from ..._protocol import ENV_SANDBOX, ENV_WEB_SOCKET
from .._base import Placement

REGION_LABEL = "homeport.io/region"
ACCELERATOR_LABEL = "ray.io/accelerator-type"

# Modal's GPU names -> the `ray.io/accelerator-type` values (ray.util.accelerators) they may run on.
RAY_ACCELERATORS: dict[str, tuple[str, ...]] = {
    "T4": ("T4",),
    "L4": ("L4",),
    "A10G": ("A10G",),
    "A10": ("A10G",),
    "L40S": ("L40S",),
    "A100": ("A100", "A100-40G", "A100-80G"),  # 40 GB asked, 80 GB welcome
    "A100-40GB": ("A100-40G",),
    "A100-80GB": ("A100-80G",),
    "H100": ("H100", "H200"),  # Modal may upgrade an H100 request to an H200
    "H100!": ("H100",),
    "H200": ("H200",),
    "B200": ("B200",),
    "B200+": ("B200", "B300"),
    "RTX-PRO-6000": ("RTX-PRO-6000",),
}
ANY = "ANY"


class Unplaceable(Exception):
    """No node of the cluster can ever run this container."""


def gpu_options(gpu: Any) -> list[tuple[str, int]]:
    """`gpu=` as given (a string or a list of them) -> [(TYPE, count), ...] in fallback order."""
    if gpu is None:
        return []
    if isinstance(gpu, dict):  # already parsed by the SDK: {"type": ..., "count": ...}
        return [(str(gpu["type"]).upper(), int(gpu.get("count", 1)))]
    items = [gpu] if isinstance(gpu, str) else list(gpu)
    out = []
    for item in items:
        if isinstance(item, (tuple, list)):  # parsed by the control plane: (TYPE, count)
            out.append((str(item[0]).upper(), int(item[1])))
            continue
        if isinstance(item, dict):
            out.append((str(item["type"]).upper(), int(item.get("count", 1))))
            continue
        name, _, count = str(item).partition(":")
        out.append((name.strip().upper(), int(count) if count else 1))
    return out


def _gpu_selector(gpu_type: str) -> dict[str, str]:
    if gpu_type == ANY:
        return {}
    values = RAY_ACCELERATORS.get(gpu_type)
    if values is None:
        raise Unplaceable(f"unknown GPU type {gpu_type!r}; Homeport knows {', '.join(sorted(RAY_ACCELERATORS))}")
    return {ACCELERATOR_LABEL: f"in({','.join(values)})"}


def _matches(labels: dict[str, str], selector: dict[str, str]) -> bool:
    for key, expr in selector.items():
        allowed = expr[3:-1].split(",") if expr.startswith("in(") else [expr]
        if labels.get(key) not in allowed:
            return False
    return True


def _fits(node: dict[str, Any], p: Placement, gpus: int, selector: dict[str, str], free: bool) -> bool:
    res = node.get("available" if free else "Resources") or {}
    if free and not res:
        res = node.get("Resources") or {}
    return (node.get("Alive", True) and _matches(node.get("Labels") or {}, selector)
            and res.get("CPU", 0) >= p.cpu and res.get("memory", 0) >= p.memory_mib * 1024 * 1024
            and res.get("GPU", 0) >= gpus)


def region_selector(regions: tuple[str, ...], nodes: list[dict[str, Any]]) -> dict[str, str]:
    if not regions:
        return {}
    known = sorted({n["Labels"][REGION_LABEL] for n in nodes
                    if n.get("Alive", True) and REGION_LABEL in (n.get("Labels") or {})})
    wanted = [r for r in known if any(r == q or r.startswith(q + "-") for q in regions)]
    if not wanted:
        raise Unplaceable(
            f"region={list(regions)} matches no node: the cluster's nodes are in "
            f"{', '.join(known) or 'no region (label nodes with `ray start --labels homeport.io/region=NAME`)'}"
        )
    return {REGION_LABEL: f"in({','.join(wanted)})"}


def actor_options(p: Placement, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """The Ray actor options that place a container with placement `p` on the cluster `nodes`."""
    where = region_selector(p.regions, nodes)
    options: dict[str, Any] = {"num_cpus": p.cpu, "memory": p.memory_mib * 1024 * 1024}
    gpus = gpu_options(p.gpu)
    if not gpus:
        if not any(_fits(n, p, 0, where, free=False) for n in nodes):
            raise Unplaceable(f"no node offers {_asked(p, None, where)}; the cluster has {_describe(nodes)}")
        if where:
            options["label_selector"] = where
        return options
    choices = [(t, n, {**_gpu_selector(t), **where}) for t, n in gpus]
    feasible = [c for c in choices if any(_fits(node, p, c[1], c[2], free=False) for node in nodes)]
    if not feasible:
        asked = " or ".join(_asked(p, f"{t}:{n}", sel) for t, n, sel in choices)
        raise Unplaceable(f"no node can ever hold {asked}; the cluster has {_describe(nodes)}")
    if len({n for _, n, _ in feasible}) == 1:
        first, *rest = feasible
        options["num_gpus"] = first[1]
        if first[2]:
            options["label_selector"] = first[2]
        if rest:
            options["fallback_strategy"] = [{"label_selector": sel} for _, _, sel in rest]
        return options
    now = next((c for c in feasible if any(_fits(node, p, c[1], c[2], free=True) for node in nodes)), feasible[0])
    options["num_gpus"] = now[1]
    if now[2]:
        options["label_selector"] = now[2]
    return options


def _asked(p: Placement, gpu: str | None, selector: dict[str, str]) -> str:
    parts = [f"{p.cpu:g} CPU", f"{p.memory_mib} MiB"]
    if gpu:
        parts.append(f"GPU {gpu}")
    if REGION_LABEL in selector:
        parts.append(f"region {selector[REGION_LABEL][3:-1]}")
    return ", ".join(parts)


def _describe(nodes: list[dict[str, Any]]) -> str:
    out = []
    for n in nodes:
        if not n.get("Alive", True):
            continue
        res, labels = n.get("Resources") or {}, n.get("Labels") or {}
        desc = f"{res.get('CPU', 0):g} CPU, {res.get('memory', 0) / 2**20:.0f} MiB"
        if res.get("GPU"):
            desc += f", {res['GPU']:g} GPU {labels.get(ACCELERATOR_LABEL, '')}".rstrip()
        if labels.get(REGION_LABEL):
            desc += f" in {labels[REGION_LABEL]}"
        out.append(f"[{desc}]")
    return "; ".join(out) or "no live nodes"


def cluster_capacity(resources: dict[str, float]) -> tuple[float, int]:
    """(cores, MiB) of a cluster, from `ray.cluster_resources()`: what containers may request in all."""
    return float(resources.get("CPU", 0.0)), int(resources.get("memory", 0.0) // 2**20)


def pinned_home(env: dict[str, str]) -> str | None:
    """What makes a container run on the control plane's node (None: nothing, it goes anywhere)."""
    if ENV_WEB_SOCKET in env:
        return "a web endpoint (the gateway reaches it over a Unix socket of the control plane's machine)"
    if ENV_SANDBOX in env:
        return ("a Sandbox (its agent connects to the control plane's Unix socket, its port tunnels are Unix "
                "sockets of the control plane's machine)")
    return None


def home_options(p: Placement, home: dict[str, Any], what: str) -> dict[str, Any]:
    """Actor options that keep a container (`what`, from `pinned_home`) on the control plane's node `home`
    (`ray.nodes()` row): its requests must fit there, else it fails saying so (not pending forever)."""
    try:
        options = actor_options(p, [home])
    except Unplaceable as exc:
        raise Unplaceable(f"UnimplementedError: on Ray, {what} runs on the control plane's node only, and that "
                          f"node cannot hold it ({exc}); running it on other nodes is not built yet") from None
    options.pop("label_selector", None)
    options.pop("fallback_strategy", None)
    return options
