"""What the dashboard shows, read from the control plane's records: plain dicts, JSON-ready.

Nothing here changes the control plane: it reads through `ControlPlaneReads`, the read model that the
control plane (`services.ControlPlane`) builds for it. Secrets appear by name, key names and dates
only: their values are never read here, so no page can show one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

import psutil

from ..core.scheduler import Pool
from ..logs import LogQuery
from ..observe import Observer
from ..records import ContainerRecord, FunctionRecord
from ..web import Route


class ControlPlaneReads(Protocol):
    """What the dashboard reads of the control plane, and the one thing it does (a rollback)."""

    @property
    def started_at(self) -> float: ...

    @property
    def apps(self) -> Mapping[str, dict[str, Any]]: ...

    @property
    def functions(self) -> Mapping[str, FunctionRecord]: ...

    @property
    def containers(self) -> Mapping[str, ContainerRecord]: ...

    def pools(self) -> list[Pool]: ...

    def queued(self, pool: Pool) -> int:
        """Inputs waiting in `pool`'s queue (a map's chunk, queued as one, counts each input it has left)."""
        ...

    def pool(self, function_id: str) -> Pool | None: ...

    def app_list(self) -> list[dict[str, Any]]: ...

    def deployments(self, app_id: str) -> list[dict[str, Any]]: ...

    def next_runs(self) -> dict[tuple[str, str], float]: ...

    def container_list(self) -> list[dict[str, Any]]: ...

    def volume_list(self) -> list[dict[str, Any]]: ...

    def secret_list(self) -> list[dict[str, Any]]: ...

    def web_routes(self) -> list[tuple[str, str, Route]]:
        """(label, URL, route) of each web endpoint served."""
        ...

    def status(self) -> dict[str, Any]: ...

    def log_lines(self, query: LogQuery) -> list[dict[str, Any]]: ...

    async def rollback(self, name: str, version: int | None) -> dict[str, Any]:
        """Deploy an earlier version of a deployed app again, as a new version (`homeport app rollback`)."""
        ...


def gauges(cp: ControlPlaneReads) -> dict[str, Any]:
    """Read at scrape time by `/metrics`: containers by state and queue depth per function."""
    by_state: dict[str, int] = {}
    for rec in cp.containers.values():
        by_state[rec.state] = by_state.get(rec.state, 0) + 1
    depth = {}
    for pool in cp.pools():
        fn = cp.functions.get(pool.id)
        if fn is not None:
            depth[(fn.app_id, fn.tag)] = cp.queued(pool)
    return {"containers_by_state": by_state, "queue_depth": depth}


def pool_sizes(cp: ControlPlaneReads) -> dict[str, tuple[int, int]]:
    """function id -> (containers, queued inputs), sampled once a second for the function charts."""
    return {pool.id: (len(pool.containers), cp.queued(pool)) for pool in cp.pools()}


def apps(cp: ControlPlaneReads) -> list[dict[str, Any]]:
    out = []
    for row in cp.app_list():
        live = cp.apps.get(row["app_id"])
        functions = []
        if live:
            for tag, fid in sorted(live.get("by_tag", {}).items()):
                functions.append({"function_id": fid, "tag": tag})
        row = {**row, "functions": functions, "schedules": schedules(cp, row["app_id"]),
               "versions": versions(cp, row)}
        out.append(row)
    return out


def versions(cp: ControlPlaneReads, row: dict[str, Any]) -> list[dict[str, Any]]:
    if row.get("state") != "deployed" and not cp.deployments(row["app_id"]):
        return []
    return [{"version": d["version"], "created_at": d["created_at"], "functions": [f["tag"] for f in d["functions"]]}
            for d in reversed(cp.deployments(row["app_id"]))]


def schedules(cp: ControlPlaneReads, app_id: str) -> list[dict[str, Any]]:
    return [{"function": tag, "next_run": at} for (aid, tag), at in sorted(cp.next_runs().items())
            if aid == app_id]


def function(cp: ControlPlaneReads, observer: Observer, fid: str) -> dict[str, Any] | None:
    fn = cp.functions.get(fid)
    if fn is None:
        return None
    pool = cp.pool(fid)
    cfg = fn.config
    settings = {k: getattr(cfg, k) for k in ("min_containers", "max_containers", "buffer_containers",
                                              "scaledown_window", "max_inputs", "target_inputs", "timeout",
                                              "startup_timeout", "cpu", "memory_mib") if hasattr(cfg, k)}
    fig = observer.functions.get(fid)
    figures = fig.summary(time.time()) if fig is not None else None
    return {
        "function_id": fid, "app_id": fn.app_id, "tag": fn.tag,
        "app_name": (cp.apps.get(fn.app_id) or {}).get("name"),
        "settings": settings, "retries": fn.retries,
        "queued": cp.queued(pool) if pool is not None else 0,
        "containers": len(pool.containers) if pool is not None else 0,
        "start_failures": pool.start_failures if pool is not None else 0,
        "figures": figures,
    }


def containers(cp: ControlPlaneReads) -> list[dict[str, Any]]:
    out = []
    for row in cp.container_list():
        rec = cp.containers.get(row["container_id"])
        row = {**row, "function_id": rec.fn.function_id if rec else None, "node": "local",
               **usage(rec.pid if rec else None)}
        out.append(row)
    return out


def usage(pid: int | None) -> dict[str, Any]:
    """CPU and memory of a container's process tree (psutil reads the kernel's accounting; the same
    numbers its cgroup adds up, also where the container has no cgroup)."""
    if not pid:
        return {"memory_bytes": None, "cpu_seconds": None}
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {"memory_bytes": None, "cpu_seconds": None}
    memory = cpu = 0.0
    for p in procs:
        try:
            memory += p.memory_info().rss
            t = p.cpu_times()
            cpu += t.user + t.system
        except psutil.Error:
            continue
    return {"memory_bytes": int(memory), "cpu_seconds": round(cpu, 3)}


def storage(cp: ControlPlaneReads) -> dict[str, Any]:
    secrets = cp.secret_list()
    return {
        "volumes": cp.volume_list(),
        # Names, key names and dates: `SecretStore.list` never decrypts a value.
        "secrets": [{"name": s["name"], "created_at": s["created_at"], "updated_at": s["updated_at"],
                     "keys": s["keys"]} for s in secrets],
    }


def endpoints(cp: ControlPlaneReads) -> list[dict[str, Any]]:
    return [{"label": label, "url": url, "app_id": route.app_id, "app_name": route.app_name,
             "function": route.key, "requires_auth": route.requires_auth}
            for label, url, route in sorted(cp.web_routes(), key=lambda r: r[0])]


def snapshot(cp: ControlPlaneReads) -> dict[str, Any]:
    """What every page is redrawn from, pushed once a second."""
    return {"at": time.time(), "apps": apps(cp), "containers": containers(cp), "endpoints": endpoints(cp),
            "status": {"pid": cp.status()["pid"], "queued": cp.status()["queued"],
                       "containers": len(cp.containers), "started_at": cp.started_at}}
