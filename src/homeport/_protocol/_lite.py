"""The part of msgspec the contract uses, in pure Python over msgpack: for a container whose interpreter
cannot load msgspec's compiled core (an image on another Python version than the control plane's, which
links its own packages into every container).

Same wire format and the same types; decoding converts maps and arrays into the message types but
checks only the shape it needs (tags, required fields), not every field's type: the control plane,
which always has msgspec, is where what peers send is validated.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any, ClassVar

import msgpack

_NODEFAULT: Any = object()


class ValidationError(ValueError):
    pass


class DecodeError(ValueError):
    pass


class _Config:
    __slots__ = ("array_like", "forbid_unknown_fields", "kw_only", "omit_defaults", "tag", "tag_field")
    array_like: bool | None
    forbid_unknown_fields: bool | None
    kw_only: bool | None
    omit_defaults: bool | None
    tag: str | None
    tag_field: str | None

    def __init__(self, **kw: Any) -> None:
        for name in self.__slots__:
            setattr(self, name, kw.get(name))


class Struct:
    """Fields from the annotations (ClassVars left out), defaults from class attributes."""

    __struct_fields__: ClassVar[tuple[str, ...]] = ()
    __struct_defaults__: ClassVar[dict[str, Any]] = {}
    __struct_config__: ClassVar[_Config] = _Config()
    __lite_hints__: ClassVar[list[tuple[str, Any]] | None] = None

    def __init_subclass__(cls, tag: str | None = None, tag_field: str | None = None, array_like: bool | None = None,
                          omit_defaults: bool | None = None, kw_only: bool | None = None,
                          forbid_unknown_fields: bool | None = None, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        parent = cls.__mro__[1].__dict__.get("__struct_config__") or Struct.__struct_config__
        own = dict(tag=tag, tag_field=tag_field, array_like=array_like, omit_defaults=omit_defaults,
                   kw_only=kw_only, forbid_unknown_fields=forbid_unknown_fields)
        merged = {name: own[name] if own[name] is not None else getattr(parent, name) for name in own}
        merged["tag"] = tag  # a tag belongs to its class only
        cls.__struct_config__ = _Config(**merged)
        base = cls.__mro__[1]
        fields = list(base.__struct_fields__) if issubclass(base, Struct) else []
        defaults = dict(base.__struct_defaults__) if issubclass(base, Struct) else {}
        for name, annotation in inspect.get_annotations(cls).items():
            if "ClassVar" in str(annotation) or name.startswith("__"):
                continue
            if name not in fields:
                fields.append(name)
            value = cls.__dict__.get(name, _NODEFAULT)
            if value is not _NODEFAULT:
                defaults[name] = value
        cls.__struct_fields__ = tuple(fields)
        cls.__struct_defaults__ = defaults
        cls.__lite_hints__ = None
        for name in defaults:  # instances hold every field; the class keeps no shared mutable default
            if name in cls.__dict__:
                delattr(cls, name)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        fields = self.__struct_fields__
        if len(args) > len(fields):
            raise TypeError(f"{type(self).__name__} takes at most {len(fields)} positional arguments")
        values = dict(zip(fields, args))
        for name, value in kwargs.items():
            if name not in fields:
                raise TypeError(f"Unexpected keyword argument '{name}'")
            values[name] = value
        for name in fields:
            if name in values:
                setattr(self, name, values[name])
            elif name in self.__struct_defaults__:
                default = self.__struct_defaults__[name]
                setattr(self, name, default.copy() if isinstance(default, (list, dict)) else default)
            else:
                raise TypeError(f"Missing required argument '{name}'")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(getattr(self, f) == getattr(other, f) for f in self.__struct_fields__)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{f}={getattr(self, f)!r}' for f in self.__struct_fields__)})"


def _plan(cls: type[Struct]) -> list[tuple[str, Any]]:
    """(field, converter or None) per field, worked out once per class: most fields need none."""
    plan = cls.__lite_hints__
    if plan is None:
        hints = typing.get_type_hints(cls)  # each class's annotations in its own module's names
        plan = cls.__lite_hints__ = [(f, _converter(hints[f])) for f in cls.__struct_fields__]
    return plan


def _builtin(obj: Any) -> Any:
    if isinstance(obj, Struct):
        config = obj.__struct_config__
        fields = obj.__struct_fields__
        defaults = obj.__struct_defaults__
        if config.array_like:
            out = [getattr(obj, f) for f in fields]
            if config.omit_defaults:
                while out and fields[len(out) - 1] in defaults and out[-1] == defaults[fields[len(out) - 1]]:
                    out.pop()
            return out
        result: dict[str, Any] = {}
        if config.tag is not None and config.tag_field is not None:
            result[config.tag_field] = config.tag
        for f in fields:
            value = getattr(obj, f)
            if config.omit_defaults and f in defaults and value == defaults[f]:
                continue
            result[f] = value
        return result
    if isinstance(obj, (bytearray, memoryview)):
        return bytes(obj)
    raise TypeError(f"Encoding objects of type {type(obj).__name__} is unsupported")


def _struct_types(tp: Any) -> list[type[Struct]]:
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    return [a for a in args if isinstance(a, type) and issubclass(a, Struct)]


def _converter(tp: Any) -> Any:
    """A function (value, path) -> value for a type that holds structs; None for plain data."""
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp) or (Any,)
        each = _converter(item)
        if each is None:
            return None
        return lambda value, path: (
            [each(v, (path, i)) for i, v in enumerate(value)] if isinstance(value, list) else value
        )
    structs = _struct_types(tp)
    if not structs:
        return None
    if len(structs) == 1 and not structs[0].__struct_config__.tag:
        cls = structs[0]
        return lambda value, path: None if value is None else _to_struct(value, cls, path)
    field = structs[0].__struct_config__.tag_field
    by_tag = {cls.__struct_config__.tag: cls for cls in structs}

    def tagged(value: Any, path: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValidationError(f"Expected `object`, got `{type(value).__name__}`" + _at(path))
        cls = by_tag.get(value.get(field))
        if cls is None:
            if field not in value:
                raise ValidationError(f"Object missing required field `{field}`" + _at(path))
            raise ValidationError(f"Invalid value {value.get(field)!r}" + _at((path, field)))
        return _to_struct(value, cls, path)

    return tagged


def _convert(value: Any, tp: Any, path: Any) -> Any:
    conv = _converter(tp)
    return value if conv is None else conv(value, path)


def _at(path: Any) -> str:
    """A path kept as nested (parent, key) pairs while decoding, written out only for an error."""
    parts: list[str] = []
    while isinstance(path, tuple):
        path, key = path
        parts.append(f"[{key}]" if isinstance(key, int) else f".{key}")
    return f" - at `${''.join(reversed(parts))}`" if parts else ""


def _to_struct(value: Any, cls: type[Struct], path: Any) -> Struct:
    plan = _plan(cls)
    defaults = cls.__struct_defaults__
    fields: dict[str, Any] = {}
    if cls.__struct_config__.array_like:
        if not isinstance(value, list):
            raise ValidationError(f"Expected `array`, got `{type(value).__name__}`" + _at(path))
        n = len(value)
        for i, (f, conv) in enumerate(plan):
            if i < n:
                v = value[i]
                fields[f] = v if conv is None else conv(v, (path, i))
            elif f in defaults:
                default = defaults[f]
                fields[f] = default.copy() if isinstance(default, (list, dict)) else default
            else:
                raise ValidationError(f"Expected `array` of at least length {i + 1}, got {n}" + _at(path))
    elif isinstance(value, dict):
        for f, conv in plan:
            if f in value:
                v = value[f]
                fields[f] = v if conv is None else conv(v, (path, f))
            elif f in defaults:
                default = defaults[f]
                fields[f] = default.copy() if isinstance(default, (list, dict)) else default
            else:
                raise ValidationError(f"Object missing required field `{f}`" + _at(path))
    else:
        raise ValidationError(f"Expected `object`, got `{type(value).__name__}`" + _at(path))
    obj = cls.__new__(cls)
    obj.__dict__.update(fields)
    return obj


class _Encoder:
    def encode(self, obj: Any) -> bytes:
        return msgpack.packb(obj, default=_builtin, use_bin_type=True)

    def encode_into(self, obj: Any, buf: bytearray, offset: int = 0) -> None:
        del buf[offset:]
        buf += self.encode(obj)


class _Decoder:
    def __init__(self, type: Any = Any) -> None:
        conv = _converter(type)
        self._convert = conv if conv is not None else (lambda value, path: value)

    def decode(self, data: bytes) -> Any:
        try:
            value = msgpack.unpackb(data, raw=False, strict_map_key=False)
        except Exception as exc:
            raise DecodeError(str(exc)) from None
        return self._convert(value, None)


def convert(obj: Any, type: Any, builtin_types: Any = ()) -> Any:
    """Plain data (maps, lists) as `type`."""
    return _convert(obj, type, None)


msgpack_ns = types.SimpleNamespace(Encoder=_Encoder, Decoder=_Decoder)


def _asdict(obj: Struct) -> dict[str, Any]:
    return {f: getattr(obj, f) for f in obj.__struct_fields__}


def _replace(obj: Struct, **changes: Any) -> Struct:
    return type(obj)(**{**_asdict(obj), **changes})


structs = types.SimpleNamespace(asdict=_asdict, replace=_replace)
