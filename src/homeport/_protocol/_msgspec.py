"""msgspec, or where its compiled core cannot load (a container on another Python version than the
control plane's), the pure-Python stand-in `_lite` with the same API subset and wire format."""

from __future__ import annotations

try:
    from msgspec import DecodeError, Struct, ValidationError, convert, structs
    from msgspec.msgpack import Decoder, Encoder

    NATIVE = True
except ImportError:  # pragma: no cover - exercised by tests that force the stand-in
    from ._lite import DecodeError, Struct, ValidationError, convert, structs  # type: ignore[assignment,no-redef]
    from ._lite import msgpack_ns as _ns

    Decoder, Encoder = _ns.Decoder, _ns.Encoder  # type: ignore[misc]
    NATIVE = False

__all__ = ["NATIVE", "DecodeError", "Decoder", "Encoder", "Struct", "ValidationError", "convert", "structs"]
