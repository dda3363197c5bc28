"""Apps: ephemeral and deployed ones, their functions' pools, publishing their web endpoints, deploys
(a redeploy swaps the version atomically), history and rollback, restoring deployed apps and their
durable calls after a restart, lookups by name, and stopping.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from .. import _protocol as P
from .._names import object_name_problem
from ..backends import Backend
from ..exception import InvalidError
from .calls import CallService
from .core.policy import pool_config
from .executor import Executor
from .functions import FunctionSetup
from .launch import Launcher
from .records import ERROR, FunctionRecord, Peer, Registry, new_id
from .schedules import ScheduleRunner
from .state import State

if TYPE_CHECKING:
    from .web import WebEndpoints

log = logging.getLogger("homeport.server")


class AppSandboxes(Protocol):
    """What stopping an app asks of the sandbox service (`sandboxes.Sandboxes`): its sandboxes end too."""

    def app_stopped(self, app_id: str) -> None: ...

# Start-up failures in a row after which `app list` / `container list` call a pool crash-looping.
CRASH_LOOP_FAILURES = 2


def _check_name(name: Any, object_type: str) -> None:
    """Modal's name rule, on the server, for every named object (a name is a key, never a path)."""
    why = object_name_problem(name, object_type)
    if why is not None:
        raise InvalidError(why)


class AppService:
    def __init__(self, registry: Registry, executor: Executor, state: State, backend: Backend, launcher: Launcher,
                 functions: FunctionSetup, calls: CallService, schedules: ScheduleRunner, sandboxes: AppSandboxes,
                 web: Callable[[], WebEndpoints | None], spawn: Callable[[Any], asyncio.Task]) -> None:
        self.registry = registry
        self.apps = registry.apps
        self.functions = registry.functions
        self.containers = registry.containers
        self.log_subscribers = registry.log_subscribers
        self.stopping_apps = registry.stopping_apps
        self.executor = executor
        self.state = state
        self.backend = backend
        self.launcher = launcher
        self.setup = functions
        self.calls = calls
        self.schedules = schedules
        self.sandboxes = sandboxes
        self._web = web
        self.spawn = spawn
        self._app_stop_waiters: dict[str, list[asyncio.Future]] = {}

    @property
    def web(self) -> WebEndpoints | None:
        return self._web()

    def create_app(self, peer: Peer, msg: P.AppCreate) -> str:
        app_id = new_id("ap")
        mode = "detached" if msg.detach else "ephemeral"
        self.apps[app_id] = {"app_id": app_id, "name": msg.name, "state": mode, "functions": []}
        self.state.create_app(app_id, msg.name, msg.description, mode)
        if mode == "ephemeral":
            peer.apps.add(app_id)
        self.log_subscribers.setdefault(app_id, set()).add(peer)
        return app_id

    async def publish_app(self, msg: P.AppPublish) -> dict[str, Any]:
        """Start an ephemeral app's functions: their ids by tag, and the URLs of its web endpoints."""
        app_id = msg.app_id
        if app_id not in self.apps:
            raise LookupError(f"app {app_id} is not running")
        self._plan_web(self.apps[app_id], msg.functions)
        ids = self._add_functions(app_id, msg.functions, anchor=time.time())
        return {"ids": ids, "web_urls": await self._publish_web(app_id, ids)}

    def _plan_web(self, app: dict[str, Any], functions: list[dict[str, Any]]) -> None:
        """Refuse, before anything starts, web endpoints whose URL labels clash."""
        if self.web is not None:
            self.web.plan(app, [(f["tag"], f["definition"]) for f in functions])

    async def _publish_web(self, app_id: str, ids: dict[str, str]) -> dict[str, str]:
        app = self.apps.get(app_id)
        records = [self.functions[fid] for fid in ids.values() if fid in self.functions]
        if self.web is None or app is None or not any(r.defn.web for r in records):
            return {}
        return await self.web.publish(app, records)

    def _add_functions(self, app_id: str, functions: list[dict[str, Any]], anchor: float) -> dict[str, str]:
        """Start pools for an app's functions (the current version); schedules start with them."""
        app = self.apps[app_id]
        ids: dict[str, str] = {}
        now = time.monotonic()
        # Named secrets are resolved before anything starts: a missing one fails the whole app.
        self.setup.check_placeable(functions)
        envs = [self.setup.function_env(f["config"]) for f in functions]
        mounts = [self.setup.function_mounts(f["config"]) for f in functions]
        rows: list[tuple[str, str, str, dict[str, Any]]] = []
        try:
            self._add_each(app_id, app, functions, envs, mounts, anchor, now, ids, rows)
        finally:
            self.state.add_functions(rows)  # one commit for them all
        return ids

    def _add_each(self, app_id: str, app: dict[str, Any], functions: list[dict[str, Any]], envs: list[dict[str, str]],
                  mounts: list[list[list[str]]], anchor: float, now: float, ids: dict[str, str],
                  rows: list[tuple[str, str, str, dict[str, Any]]]) -> None:
        for f, env, mnt in zip(functions, envs, mounts):
            fid = new_id("fu")
            cfg = f["config"]
            config = pool_config(cfg, f["definition"])
            if self.backend.places_gpus:  # Ray assigns GPUs with the node: this machine's are not reserved
                config = dataclasses.replace(config, gpu=())
            if app["state"] == "deployed":  # crash loops back off; the queue never fails for crashes
                config = replace(config, fail_on_crashes=False)
            definition = dict(f["definition"], app_id=app_id, function_id=fid, mounts=mnt,
                              cpu_limit=cfg.get("cpu_limit"), memory_limit_mib=cfg.get("memory_limit_mib"))
            rec = FunctionRecord(
                fid, app_id, f["tag"], definition, config, env, cfg.get("retries"),
                bool(definition.get("is_generator")),
            )
            self.functions[fid] = rec
            self.spawn(self.launcher.prepare_function_template(rec))
            app["functions"].append(fid)
            app.setdefault("by_tag", {})[f["tag"]] = fid
            app.setdefault("info", {})[f["tag"]] = f.get("info") or {}
            rows.append((fid, app_id, f["tag"], {k: v for k, v in definition.items() if k != "serialized"}))
            self.executor.add_pool(fid, config, now)
            ids[f["tag"]] = fid
            if cfg.get("schedule"):
                self.schedules.start(app_id, f["tag"], cfg["schedule"], anchor, durable=app["state"] == "deployed")

    # --- deployed apps -----------------------------------------------------------------------------
    def deploy_app(self, peer: Peer | None, msg: P.AppDeploy) -> dict[str, Any]:
        """Register (or replace) a named app that outlives its client.

        A redeploy swaps the version atomically: lookups by name see only the new functions from the
        moment this returns, while the old version's pools finish the inputs they already have.
        """
        name = msg.name
        _check_name(name, "App")
        for f in msg.functions:
            self.setup.function_env(f["config"])  # a missing secret fails the deploy before anything changes
            self.setup.function_mounts(f["config"])
        app_id = self.registry.deployed_by_name(name) or self.state.deployed_app_id(name)
        if app_id is None:
            app_id = new_id("ap")
            self.state.create_app(app_id, name, msg.description, "deployed")
        else:
            self.state.set_app_state(app_id, "deployed")
        version, created = self.state.add_deployment(app_id, msg.functions)
        if msg.meta:
            self.state.set_deployment_meta(app_id, version, {k: str(v) for k, v in msg.meta.items() if v})
        old = self.apps.get(app_id)
        if old is None:
            self.apps[app_id] = {"app_id": app_id, "name": name, "state": "deployed", "functions": []}
        else:
            self.schedules.stop_app(app_id)
            for fid in old.get("by_tag", {}).values():
                log.info("retiring %s (%s) of app %s: version %d replaces it", fid, self.functions[fid].tag, name, version)
                self.executor.retire_pool(fid)
            old["by_tag"], old["info"] = {}, {}
        self.apps[app_id]["version"] = version
        if peer is not None:  # None: from the dashboard, which reads logs from the store
            self.log_subscribers.setdefault(app_id, set()).add(peer)
        ids = self._add_functions(app_id, msg.functions, anchor=created)
        log.info("deployed app %s (%s) version %d", name, app_id, version)
        return {"app_id": app_id, "version": version, "ids": ids}

    async def deploy_app_web(self, peer: Peer | None, msg: P.AppDeploy) -> dict[str, Any]:
        name = msg.name
        self._plan_web({"app_id": self.registry.deployed_by_name(name), "name": name, "state": "deployed"}, msg.functions)
        reply = self.deploy_app(peer, msg)
        reply["web_urls"] = await self._publish_web(reply["app_id"], reply["ids"])
        return reply

    async def restore_deployed(self) -> None:
        """On start-up: every app still deployed runs again, at its latest version."""
        for dep in self.state.live_deployments():
            app_id = dep["app_id"]
            self.apps[app_id] = {"app_id": app_id, "name": dep["name"], "state": "deployed", "functions": [],
                                 "version": dep["version"]}
            try:
                ids = self._add_functions(app_id, dep["functions"], anchor=dep["created_at"])
                await self._publish_web(app_id, ids)
                log.info("restored deployed app %s (%s) version %d", dep["name"], app_id, dep["version"])
            except Exception:
                log.exception("could not restore deployed app %s", dep["name"])
        self.restore_calls()

    def restore_calls(self) -> None:
        """On start-up, after `restore_deployed`: the durable calls a previous control plane accepted and
        did not finish run again (at least once: one that was running when it died runs twice), on the
        current version of their function; their results reach `FunctionCall.from_id(...).get()`."""
        for call in self.state.unfinished_calls():
            call_id = call["call_id"]
            try:
                fid = self._restored_fid(call["function_id"])
            except Exception as exc:  # e.g. a variant whose secret was deleted meanwhile
                log.warning("could not bind the function of call %s again: %s", call_id, exc)
                fid = None
            why = None
            if fid is None:
                why = (f"call {call_id} could not run again after the control plane restarted: its function's app "
                       "is no longer deployed")
            else:
                why = self.calls.create_call(None, P.Call(fid=fid, call=call_id, kind=P.KIND_SPAWN, inputs=call["inputs"]),
                                             answer=False, restored=True)
            if why is not None:
                self.state.finish_call(call_id, ERROR, {"code": "execution", "msg": why})
            else:
                log.info("call %s accepted by a previous control plane runs again", call_id)

    def _restored_fid(self, old_fid: str) -> str | None:
        """The function a durable call of `old_fid` (a function id of a previous control plane) runs on now."""
        variant = self.state.variant(old_fid)
        if variant is not None:
            base_old, request = variant
            base = self._restored_fid(base_old)
            return None if base is None else self.setup.bind_function(P.FunctionBind(**request, fid=base))
        tagged = self.state.function_tag(old_fid)
        if tagged is None:
            return None
        app = self.apps.get(tagged[0])
        if app is None or app.get("state") != "deployed":
            return None
        return app.get("by_tag", {}).get(tagged[1])

    def lookup_function(self, msg: P.FunctionLookup) -> dict[str, Any]:
        app_id = msg.app_id if msg.app_id in self.apps else self.registry.deployed_by_name(msg.app or "")
        if app_id is None:
            raise LookupError(
                f"App '{msg.app}' is not deployed. Deploy it with `homeport deploy` (or `app.deploy()`) first."
            )
        app = self.apps[app_id]
        if msg.version is not None and msg.version != app.get("version"):
            # Only the current version of a deployed app runs; an older one would need its own pools.
            from ..exception import UnimplementedError

            raise UnimplementedError(
                f"App '{msg.app}' runs version v{app.get('version')}; serving an older version "
                f"(v{msg.version}) is not built in Homeport yet."
            )
        fid = app["by_tag"].get(msg.name)
        if fid is None:
            names = ", ".join(sorted(app["by_tag"])) or "none"
            raise LookupError(f"App '{msg.app}' has no function or class '{msg.name}' (it has: {names}).")
        fn = self.functions[fid]
        web = fn.defn.web or ()
        keys = [fn.tag if e.get("name") is None else f"{fn.tag}.{e['name']}" for e in web]
        web_urls = {k: u for k in keys if self.web is not None and (u := self.web.url_of(app_id, k))}
        return {"fid": fid, "tag": fn.tag, "is_generator": fn.is_generator, "info": app["info"].get(fn.tag, {}),
                "web": fn.tag in keys, "web_url": web_urls.get(fn.tag), "web_urls": web_urls}

    def lookup_app(self, msg: P.AppLookup) -> dict[str, Any]:
        name = msg.name
        app_id = self.registry.deployed_by_name(name)
        if app_id is None:
            if not msg.create_if_missing:
                raise LookupError(f"App '{name}' is not deployed.")
            _check_name(name, "App")
            app_id = new_id("ap")
            self.state.create_app(app_id, name, name, "deployed")
            self.state.add_deployment(app_id, [])
            self.apps[app_id] = {"app_id": app_id, "name": name, "state": "deployed", "functions": [],
                                 "version": 1, "by_tag": {}, "info": {}}
        return {"app_id": app_id, "name": name}

    def list_apps(self) -> list[dict[str, Any]]:
        out = []
        for row in self.state.apps():
            live = self.apps.get(row["app_id"])
            state = live["state"] if live else row["state"]
            n_containers = sum(1 for c in self.containers.values() if c.fn.app_id == row["app_id"])
            out.append({**row, "state": state, "containers": n_containers,
                        "crash_looping": self._crash_looping(live),
                        "version": live.get("version") if live else None,
                        "functions": sorted(live.get("by_tag", {})) if live else []})
        return out

    def _crash_looping(self, app: dict[str, Any] | None) -> list[str]:
        """Functions of a running app whose containers keep failing during start-up."""
        if not app:
            return []
        tags = set()
        for fid in app["functions"]:
            pool = self.executor.pool(fid)
            if pool is not None and pool.start_failures >= CRASH_LOOP_FAILURES and fid in self.functions:
                tags.add(self.functions[fid].tag)
        return sorted(tags)

    def app_history(self, name: str) -> list[dict[str, Any]]:
        app_id = self.registry.deployed_by_name(name) or self.state.deployed_app_id(name)
        if app_id is None:
            raise LookupError(f"No deployed app named '{name}'.")
        meta = self.state.deployment_meta(app_id)
        return [
            {"version": d["version"], "created_at": d["created_at"], "functions": [f["tag"] for f in d["functions"]],
             **meta.get(d["version"], {})}
            for d in self.state.deployments(app_id)
        ]

    async def rollback_app(self, peer: Peer | None, msg: P.AppRollback) -> dict[str, Any]:
        """Deploy an earlier version's functions again, as a new version (`homeport app rollback`)."""
        name = msg.name
        app_id = self.registry.deployed_by_name(name) or self.state.deployed_app_id(name)
        if app_id is None:
            raise LookupError(f"No deployed app named '{name}'.")
        versions = self.state.deployments(app_id)
        target = msg.version
        if target is None:
            if len(versions) < 2:
                raise InvalidError(f"App '{name}' has one version only: there is no earlier one to roll back to.")
            target = versions[-2]["version"]
        match = [d for d in versions if d["version"] == target]
        if not match:
            raise LookupError(f"App '{name}' has no version {target} (it has v1 to v{versions[-1]['version']}).")
        reply = await self.deploy_app_web(peer, P.AppDeploy(name=name, functions=match[0]["functions"]))
        reply["from_version"] = target
        return reply

    # --- stopping ----------------------------------------------------------------------------------
    def stop_app(self, app_id: str, reason: str, keep_deployed: bool = False) -> None:
        app = self.apps.pop(app_id, None)
        if app is None:
            return
        log.info("stopping app %s: %s", app_id, reason)
        self.schedules.stop_app(app_id)
        self.sandboxes.app_stopped(app_id)
        if self.web is not None:
            self.web.stop_app(app_id, reason)
        for fid in app["functions"]:
            self.executor.remove_pool(fid, f"app stopped: {reason}")
            self.functions.pop(fid, None)
        if not (keep_deployed and app["state"] == "deployed"):
            self.state.set_app_state(app_id, "stopped")
        remaining = {cid for cid, rec in self.containers.items() if rec.fn.app_id == app_id}
        if remaining:
            self.stopping_apps[app_id] = remaining
        else:
            self.app_stopped(app_id)

    def app_stopped(self, app_id: str) -> None:
        """The last container of a stopped app has exited (its exit hooks have run)."""
        self.stopping_apps.pop(app_id, None)
        self.log_subscribers.pop(app_id, None)
        for fut in self._app_stop_waiters.pop(app_id, []):
            if not fut.done():
                fut.set_result(None)

    async def wait_app_stopped(self, app_id: str, timeout: float) -> bool:
        """Wait until every container of a stopped app has exited; False if `timeout` passed first."""
        if app_id not in self.stopping_apps:
            return True
        fut = asyncio.get_running_loop().create_future()
        self._app_stop_waiters.setdefault(app_id, []).append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except asyncio.TimeoutError:
            return False
