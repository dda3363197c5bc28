"""Modal 1.6's public names that Homeport does not build yet.

Each exists, so `import modal; modal.Sandbox` and `from modal import Sandbox` work, and raises
`UnimplementedError` naming itself when it is used (called, or an attribute of it read): never
`AttributeError`. A name another module defines (for example `Dict` once built) is not replaced.
"""

from __future__ import annotations

from typing import Any

from .exception import UnimplementedError

# name -> what to do instead (shown in the error)
NOT_BUILT: dict[str, str] = {
    "NetworkFileSystem": "use a modal.Volume",
    "CloudBucketMount": "use a modal.Volume",
    "Proxy": "containers reach the network directly",
    "SandboxSnapshot": "",
    "SchedulerPlacement": "every container runs on this machine",
    "Cluster": "",
    "Environment": "Homeport has one environment",
    "Workspace": "Homeport has one workspace",
    "Client": "Homeport connects to its control plane by itself",
    "FilePatternMatcher": "",
    "clustered": "",
    "sessioned": "best-effort affinity by the Modal-Session-ID header is built for @app.server",
    "interact": "",
    "billing": "",
    "experimental": "",
    "types": "",
}


def _error(name: str) -> UnimplementedError:
    hint = NOT_BUILT.get(name.split(".")[0], "")
    return UnimplementedError(f"`modal.{name}` is not built in Homeport yet" + (f" ({hint})." if hint else "."))


class _PlaceholderMeta(type):
    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise _error(cls._modal_name)

    def __getattr__(cls, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)  # introspection (pickle, inspect, hasattr) sees an ordinary class
        raise _error(f"{cls._modal_name}.{attr}")

    def __repr__(cls) -> str:
        return f"<modal.{cls._modal_name}: not built in Homeport>"


def placeholder(name: str) -> type:
    """A stand-in for `modal.<name>`: calling it, or reading any of its attributes, raises."""
    return _PlaceholderMeta(name, (), {"_modal_name": name, "__doc__": f"`modal.{name}`: not built in Homeport yet."})


def install(namespace: dict[str, Any]) -> list[str]:
    """Add a placeholder for each not-built name `namespace` (a module's globals) lacks; return them."""
    added = []
    for name in NOT_BUILT:
        if name not in namespace:
            namespace[name] = placeholder(name)
            added.append(name)
    return added
