"""What a function runs with: its environment (named secrets), its volume mounts, the images it is
built on, whether this control plane can place it, and its variants (a class with parameter values, or
`with_options` overrides), each its own pool.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import _protocol as P
from ..backends import Backend
from ..exception import InvalidError, UnimplementedError
from .calls import CallService
from .core.gpus import parse_request as parse_gpu_request
from .core.policy import variant_key, variant_pool_config
from .executor import Executor
from .launch import Launcher
from .records import FunctionRecord, Registry, new_id
from .state import State

if TYPE_CHECKING:
    from .secrets import SecretStore
    from .volumes import VolumeStore

class FunctionSetup:
    def __init__(self, registry: Registry, executor: Executor, state: State, backend: Backend, launcher: Launcher,
                 calls: CallService, secrets: Callable[[], SecretStore | None],
                 volumes: Callable[[], tuple[VolumeStore | None, str | None]]) -> None:
        self.apps = registry.apps
        self.functions = registry.functions
        self.executor = executor
        self.state = state
        self.backend = backend
        self.launcher = launcher
        self.calls = calls
        self._secrets = secrets
        self._volumes = volumes  # the store, and why volumes cannot be used (None: they can)

    async def build_images(self, requests: list[dict[str, Any]], on_log: Callable[[str, str, int], None]) -> list[str]:
        """Build (or find cached) each requested image (see `Launcher.build_images`, which plans them
        all before building any); the named secrets of build steps are resolved first, so a missing
        one fails before any build too."""
        for request in requests:
            for step in request["steps"]:
                if step.get("secret_refs"):
                    named = self.function_env({"secret_refs": step["secret_refs"]})
                    step["_secret_env"] = {**named, **(step.get("_secret_env") or {})}
        return await self.launcher.build_images(requests, on_log)

    def check_placeable(self, functions: list[dict[str, Any]]) -> None:
        regional = [f["tag"] for f in functions if f["definition"].get("region")]
        if regional and not self.backend.places_by_region:
            raise UnimplementedError(
                f"`region=` of {', '.join(regional)}: this control plane runs containers on one machine "
                f"(the {self.backend.name} backend), which has no regions. Remove `region=`, or run the "
                "control plane on a Ray cluster (`homeport server start --backend ray`), whose nodes are "
                "labelled with their regions."
            )

    def function_env(self, cfg: dict[str, Any]) -> dict[str, str]:
        """A function's environment: its named secrets (decrypted), then its local secrets and `env=`."""
        env: dict[str, str] = {}
        store = self._secrets()
        for ref in cfg.get("secret_refs") or ():
            if store is None:
                raise LookupError("named secrets are not available on this control plane")
            env.update(store.get(ref["name"], ref.get("required_keys") or ()))
        env.update(cfg.get("env") or {})
        return env

    def function_mounts(self, cfg: dict[str, Any]) -> list[list[str]]:
        """[host directory, path in the container] for each volume a function mounts."""
        out = []
        volumes, unshared = self._volumes()
        for v in cfg.get("volumes") or ():
            if volumes is None:
                raise LookupError("volumes are not available on this control plane")
            if unshared:
                raise InvalidError(unshared)
            out.append([str(volumes.resolve(v["name"], bool(v.get("create_if_missing")))), v["path"]])
        return out

    def bind_function(self, msg: P.FunctionBind) -> str:
        """A variant of a function: a class with parameter values, or `with_options` overrides."""
        base = self.functions.get(self.calls.current(msg.fid))
        if base is None:
            raise LookupError(f"function {msg.fid} is not running (its app was stopped)")
        # The same values give the same variant however the client ordered them.
        request = {"params": msg.params, "config": msg.config, "definition": msg.definition}
        key = variant_key(base.function_id, request)
        variants = self.apps[base.app_id].setdefault("variants", {})
        fid = variants.get(key)
        if fid is not None and fid in self.functions:
            return fid
        cfg = dict(msg.config or {})
        env = {**base.env, **self.function_env({"secret_refs": cfg.pop("secret_refs", None),
                                                 "env": cfg.pop("env", {})})}
        limits = {k: cfg.pop(k) for k in ("cpu_limit", "memory_limit_mib") if k in cfg}
        if "volumes" in cfg:
            limits["mounts"] = self.function_mounts({"volumes": cfg.pop("volumes")})
        retries = cfg.pop("retries", base.retries) if "retries" in cfg else base.retries
        if "gpu" in cfg:  # `with_options(gpu=...)`
            cfg["gpu"] = parse_gpu_request(cfg["gpu"])
        fid = new_id("fu")
        definition = dict(base.definition, **(msg.definition or {}), **limits,
                          params=msg.params or {}, function_id=fid, variant_of=base.function_id)
        self.check_placeable([{"tag": base.tag, "definition": definition}])
        config = variant_pool_config(base.config, cfg, definition)
        rec = FunctionRecord(fid, base.app_id, base.tag, definition, config, env, retries, base.is_generator)
        self.functions[fid] = rec
        self.apps[base.app_id]["functions"].append(fid)
        variants[key] = fid
        if self.apps[base.app_id].get("state") == "deployed":  # its durable calls bind it again after a restart
            self.state.add_variant(fid, base.function_id, request)
        self.executor.add_pool(fid, config)
        return fid
