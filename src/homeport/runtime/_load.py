"""Loading the user's code in a container: the app's module (from the source the definition carries),
the function or class it names, a class's lifecycle hooks, and the `snap=True` enter hooks."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import inspect
import os
import sys
import time
from typing import Any

import cloudpickle

from .. import _context
from .. import _protocol as P
from .._protocol.definition import FunctionDefinition
from ._run import Service


class _SourceLoader(importlib.machinery.SourceFileLoader):
    """Compiles the app's file from its source every time, never from `__pycache__`: the source the
    definition carries (the file as it was when the app started or was deployed), else the file.

    A cached `.pyc` counts as current when the source's mtime (in whole seconds) and size match, so
    an edit saved within the second of the last import, keeping the size ("version 1" -> "version 2"),
    would run the old code: exactly what a `homeport deploy` or `serve` right after an edit does.
    """

    def __init__(self, fullname: str, path: str, source: bytes | None = None) -> None:
        super().__init__(fullname, path)
        self._source = source  # the file as the app was started or deployed with (the definition's)

    def path_stats(self, path: str) -> dict[str, Any]:
        raise OSError("no bytecode cache for the app's own file")

    def get_data(self, path: str) -> bytes:
        if self._source is not None and path == self.path:
            return self._source
        return super().get_data(path)


def import_user_module(name: str, path: str | None, sys_path: list[str], source: bytes | None = None):
    """The user's module `name` (from its file `path`, as `source` when given), `sys_path` first on the path."""
    for p in reversed(sys_path):
        if p not in sys.path:
            sys.path.insert(0, p)
    if name == "__main__" and path is not None:
        # A script run as `python app.py`: import its file under another name, so that its
        # `if __name__ == "__main__":` block never runs inside a container.
        name = P.SCRIPT_MODULE
    if name in sys.modules:
        return sys.modules[name]
    if path is None:
        return importlib.import_module(name)
    spec = importlib.util.spec_from_file_location(name, path, loader=_SourceLoader(name, path, source))
    assert spec is not None and spec.loader is not None  # a file location with a loader always has a spec
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _resolve(module, qualname: str):
    obj = module
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def load_service(defn: FunctionDefinition) -> Service:
    _context.loading_user_code = True
    try:
        if defn.serialized is not None:
            target = cloudpickle.loads(defn.serialized)
        else:
            module = import_user_module(defn.module_name, defn.module_file, defn.sys_path, defn.module_source)
            target = _resolve(module, defn.qualname)
    finally:
        _context.loading_user_code = False
    user_cls = getattr(target, P.USER_CLASS_ATTR, None)
    if user_cls is None and inspect.isclass(target):
        user_cls = target
    if user_cls is not None:
        return _class_service(user_cls, defn)
    fn = getattr(target, P.USER_CALLABLE_ATTR, target)
    return Service({None: fn})


def _class_service(user_cls: type[Any], defn: FunctionDefinition) -> Service:
    instance = user_cls.__new__(user_cls)  # type: ignore[call-overload]  # mypy looks up type.__new__ here
    for k, v in defn.params.items():
        setattr(instance, k, v)
    if user_cls.__init__ is not object.__init__ and not defn.params_via_init:
        instance.__init__()
    # Attributes in definition order, base classes first; a subclass's attribute replaces its base's.
    markers: dict[str, tuple[Any, Any]] = {}
    for klass in reversed(user_cls.__mro__):
        for name, attr in vars(klass).items():
            raw = getattr(attr, "__func__", attr)
            if inspect.isfunction(raw):
                markers[name] = (getattr(raw, P.METHOD_ATTR, None), getattr(raw, P.LIFECYCLE_ATTR, None))
            else:
                markers[name] = (None, None)
    callables: dict[str | None, Any] = {}
    snap: list[tuple[str, Any]] = []
    enter: list[tuple[str, Any]] = []
    exit_: list[tuple[str, Any]] = []
    for name, (method, lifecycle) in markers.items():
        if lifecycle is not None:
            kind, is_snap = lifecycle
            hooks = exit_ if kind == "exit" else snap if is_snap else enter
            hooks.append((name, getattr(instance, name)))
        elif method is not None:
            callables[name] = getattr(instance, name)
    if any("__call__" in vars(k) for k in user_cls.__mro__ if k is not object):
        callables[None] = instance.__call__
    service = Service(callables, instance)
    service.snap_hooks = snap  # `snap=True` hooks: once per snapshot, before the others
    service.enter_hooks = enter
    service.exit_hooks = exit_
    return service


def _hide_gpus() -> dict[str, str]:
    """Hide the container's GPUs from CUDA (as in a snapshot template); returns what to restore."""
    keys = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")
    saved = {k: os.environ[k] for k in keys if k in os.environ}
    if saved:
        os.environ.update({"CUDA_VISIBLE_DEVICES": "", "NVIDIA_VISIBLE_DEVICES": "void"})
    return saved


def run_snap_hooks(service: Service, timeline: dict[str, float]) -> None:
    """Run the `snap=True` enter hooks (in a snapshot template, or in a container without one)."""
    for name, fn in service.snap_hooks:
        t = time.monotonic()
        fn()
        timeline[f"enter:{name}"] = time.monotonic() - t
