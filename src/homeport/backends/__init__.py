"""Container backends. The server depends on `Backend` and picks an implementation by name."""

from __future__ import annotations

import importlib

from ._base import Backend, ContainerSpec, ExitInfo, ImageSource, Mount, Placement, PrivateDir, TemplateSpec

__all__ = ["Backend", "ContainerSpec", "ExitInfo", "ImageSource", "Mount", "Placement", "PrivateDir", "TemplateSpec", "create_backend",
           "registered_backends"]

# name -> "module:Class"; only the chosen backend's module is imported (the Ray one imports ray).
_REGISTRY = {
    "local": "homeport.backends.local:LocalBackend",
    "ray": "homeport.backends.ray:RayBackend",
}


def registered_backends() -> list[str]:
    return sorted(_REGISTRY)


def create_backend(name: str, **kwargs) -> Backend:
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(registered_backends())}") from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)
