"""What a class body declares for `@app.cls`: `modal.parameter`s, `@modal.method`s, lifecycle hooks and web
endpoints, read from the class (and its bases); and the instance `.local()` calls run on."""

from __future__ import annotations

import inspect
import sys
from typing import Any

from . import _protocol as P
from ._partial import PartialFunction
from .exception import InvalidError

_NO_DEFAULT = object()
_PARAM_TYPES = (str, int, bool, bytes)
_TYPE_NAMES = {"str": str, "int": int, "bool": bool, "bytes": bytes}


class _Parameter:
    def __init__(self, default: Any, init: bool) -> None:
        self.default = default
        self.init = init

    def __repr__(self) -> str:
        return "modal.parameter()" if self.default is _NO_DEFAULT else f"modal.parameter(default={self.default!r})"


def parameter(*, default: Any = _NO_DEFAULT, init: bool = True) -> Any:
    """Declare a class parameter: `tag: str = modal.parameter(default="a")`, passed as `Cls(tag="b")`."""
    if default is not _NO_DEFAULT and not isinstance(default, _PARAM_TYPES):
        raise InvalidError(
            f"`modal.parameter` default must be a str, int, bool or bytes, got {type(default).__name__}"
        )
    return _Parameter(default, init)


class _ClassInfo:
    """What `@app.cls` (or `@app.function` on a class) learnt from the class body."""

    def __init__(self) -> None:
        self.methods: dict[str, dict] = {}  # name -> {"is_generator": bool}
        self.hooks: dict[str, tuple[str, bool]] = {}  # name -> ("enter", snap) | ("exit", False)
        self.params: dict[str, tuple[type, Any, bool]] = {}  # name -> (type, default, init)
        self.web: dict[str, dict] = {}  # name -> web endpoint config


def _markers(attr: Any) -> tuple[dict | None, tuple | None]:
    raw = getattr(attr, "__func__", attr)
    if not inspect.isfunction(raw):
        return None, None
    return getattr(raw, P.METHOD_ATTR, None), getattr(raw, P.LIFECYCLE_ATTR, None)


def _finalize_class(user_cls: type[Any], where: str) -> _ClassInfo:
    """Put raw functions (with runtime markers) back on the class and its bases; say what it has.

    Walks the MRO from `object` down, like attribute lookup in reverse, so that methods and hooks
    inherited from a base class count and a subclass's plain override of a method removes it.
    """
    info = _ClassInfo()
    entries: dict[str, tuple[dict | None, tuple | None]] = {}
    for klass in reversed(user_cls.__mro__):
        if klass is object:
            continue
        for name, attr in list(vars(klass).items()):
            if isinstance(attr, PartialFunction):
                attr = attr.finalize()
                setattr(klass, name, attr)
            entries[name] = _markers(attr)
            web = getattr(getattr(attr, "__func__", attr), P.WEB_ATTR, None) if inspect.isfunction(attr) else None
            if web is not None:
                info.web[name] = web
            else:
                info.web.pop(name, None)  # a subclass's plain override is no endpoint
    for name, (method, lifecycle) in entries.items():
        if method is not None:
            info.methods[name] = method
        if lifecycle is not None:
            info.hooks[name] = lifecycle
    annotations: dict[str, Any] = {}
    # What `inspect.getattr_static` finds for each name of `dir(user_cls)`, in its order: the class's own
    # attributes over its bases' (~2 ms for a dozen classes when asked name by name, on every import).
    statics: dict[str, Any] = {}
    for klass in reversed(user_cls.__mro__):
        annotations.update(inspect.get_annotations(klass, eval_str=False))
        statics.update(vars(klass))
    for name in sorted(statics):
        attr = statics[name]
        if isinstance(attr, _Parameter):
            if name not in annotations:
                raise InvalidError(
                    f"All modal.parameter() specifications need to be type-annotated: give {where} parameter "
                    f"`{name}` a type, e.g. `{name}: str = modal.parameter()`."
                )
            ann = annotations[name]
            typ = ann if isinstance(ann, type) else _TYPE_NAMES.get(str(ann))
            if typ not in _PARAM_TYPES:
                shown = ann if isinstance(ann, str) else getattr(ann, "__name__", repr(ann))
                raise InvalidError(
                    f"{where} parameter `{name}`: {shown} is not a supported modal.parameter() type. "
                    "Use one of: str, int, bool, bytes."
                )
            if attr.default is not _NO_DEFAULT and not _is_param_value(attr.default, typ):
                raise InvalidError(
                    f"{where} parameter `{name}` is annotated `{typ.__name__}`, but its default {attr.default!r} is "
                    f"{_a(type(attr.default).__name__)}. Give it {_a(typ.__name__)} default, e.g. "
                    f"`{name}: {typ.__name__} = modal.parameter(default={typ()!r})`, or change the annotation."
                )
            info.params[name] = (typ, attr.default, attr.init)
    init = user_cls.__init__
    if init is not object.__init__ and inspect.isfunction(init):
        required = [p.name for p in list(inspect.signature(init).parameters.values())[1:]
                    if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if required:
            raise InvalidError(
                f"{where} has an `__init__` that requires arguments ({', '.join(required)}), but containers "
                "create the instance themselves. Declare them as class parameters instead, e.g. "
                f"`{required[0]}: str = modal.parameter()`, and do set-up in a `@modal.enter()` method."
            )
    return info


def _a(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def _is_param_value(value: Any, typ: type) -> bool:
    # bool is an int subclass, but `n: int = modal.parameter(default=True)` is a mistake (as `Cls(n=True)` is).
    return isinstance(value, typ) and not (typ is int and isinstance(value, bool))


def default_values(params: dict[str, tuple[type, Any, bool]]) -> dict[str, Any] | None:
    """The parameter values of `Cls()` with no arguments, or None when the class has required parameters.

    A class whose parameters all have defaults has a default instance: its base pool runs with these
    values (and keeps its `min_containers` warm). One with required parameters cannot start a container
    before a caller gives the values.
    """
    if any(default is _NO_DEFAULT and init for _typ, default, init in params.values()):
        return None
    return {name: default for name, (_typ, default, _init) in params.items() if default is not _NO_DEFAULT}



def ordered_hooks(user_cls: type) -> tuple[list[str], list[str]]:
    """(enter hooks, exit hooks) by name, in the order a container runs them.

    Definition order, base classes first; `snap=True` enter hooks before the others. The container
    runtime keeps its own copy of this rule (it does not import the SDK).
    """
    order: dict[str, tuple | None] = {}
    for klass in reversed(user_cls.__mro__):
        for name, attr in vars(klass).items():
            order[name] = _markers(attr)[1]
    snap = [n for n, lc in order.items() if lc and lc[0] == "enter" and lc[1]]
    post = [n for n, lc in order.items() if lc and lc[0] == "enter" and not lc[1]]
    exits = [n for n, lc in order.items() if lc and lc[0] == "exit"]
    return snap + post, exits


def _local_instance(user_cls: type[Any], params: dict[str, Any]) -> Any:
    """An instance for `.local()`: parameters set and enter hooks run, as in a container."""
    obj = user_cls.__new__(user_cls)  # type: ignore[call-overload]  # mypy looks up type.__new__ here
    for k, v in params.items():
        setattr(obj, k, v)
    if user_cls.__init__ is not object.__init__:
        obj.__init__()
    for name in ordered_hooks(user_cls)[0]:
        getattr(obj, name)()
    return obj


def check_unregistered_classes(module_names: set[str]) -> None:
    """Raise if a module of the app holds a class with `@modal.method`/`@enter`/`@exit` methods that was
    never registered with `@app.cls()`: its methods could never be called remotely.

    (Decorators on methods run before the class exists, so this cannot be seen when they are applied.)
    """
    for module_name in sorted(module_names):
        module = sys.modules.get(module_name)
        if module is None:
            continue
        for value in list(vars(module).values()):
            if not inspect.isclass(value) or getattr(value, "__module__", None) != module_name:
                continue
            for name, attr in vars(value).items():
                if isinstance(attr, PartialFunction) and not attr.registered:
                    kind = f"`@modal.{attr.web['type']}`" if attr.web else "`@modal.method`/`@modal.enter`/`@modal.exit`"
                    raise InvalidError(
                        f"Class {value.__qualname__} has {kind} method "
                        f"`{name}` but is not registered with `@app.cls()`, so it can never run in a container. "
                        f"Add `@app.cls()` above `class {value.__name__}`."
                    )

