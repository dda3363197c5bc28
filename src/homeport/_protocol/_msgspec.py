"""msgspec, or where its compiled core cannot load (a container on another Python version than the
control plane's), the pure-Python stand-in `_lite` with the same API subset and wire format."""

from __future__ import annotations

from typing import Any

try:
    from msgspec import NODEFAULT, DecodeError, Struct, ValidationError, convert, structs
    from msgspec.msgpack import Decoder, Encoder

    NATIVE = True

    def defaults_of(cls: type) -> dict[str, Any]:
        """A Struct class's fields that have defaults, with their default values."""
        out: dict[str, Any] = {}
        for f in structs.fields(cls):
            if f.default is not NODEFAULT:
                out[f.name] = f.default
            elif f.default_factory is not NODEFAULT:
                out[f.name] = f.default_factory()
        return out
except ImportError:  # pragma: no cover - exercised by tests that force the stand-in
    from ._lite import DecodeError, Struct, ValidationError, convert, structs  # type: ignore[assignment,no-redef]
    from ._lite import msgpack_ns as _ns

    Decoder, Encoder = _ns.Decoder, _ns.Encoder  # type: ignore[misc]
    NATIVE = False

    def defaults_of(cls: type) -> dict[str, Any]:
        """A Struct class's fields that have defaults, with their default values."""
        return dict(cls.__struct_defaults__)  # type: ignore[attr-defined]

__all__ = ["NATIVE", "DecodeError", "Decoder", "Encoder", "Struct", "ValidationError", "convert", "defaults_of", "structs"]
