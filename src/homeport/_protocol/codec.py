"""Encoding and decoding of framed messages: msgspec's msgpack, one reused encoder and decoder each."""

from __future__ import annotations

import re
import typing
from typing import Any

from . import messages as m
from . import sandbox as sb
from ._msgspec import DecodeError, Decoder, Encoder, Struct, ValidationError, convert, structs
from .frames import HEADER

_HEADER_SIZE = HEADER.size
_pack_header = HEADER.pack_into
_encoder = Encoder()
_encode_into = _encoder.encode_into
_any = Decoder()


class MalformedMessage(ValueError):
    """A message that does not decode as its type: its text names the field and what is wrong."""


def encode(message: Struct | dict[str, Any]) -> bytes:
    """A message (a typed message or a plain map) as a frame: length header, then msgpack."""
    buf = bytearray(_HEADER_SIZE)
    _encode_into(message, buf, _HEADER_SIZE)
    _pack_header(buf, 0, len(buf) - _HEADER_SIZE)
    return bytes(buf)  # bytes, not the bytearray: callers hash it (a canonical key) or keep it


def encode_body(message: Any) -> bytes:
    """msgpack without the frame (a definition stored on disk, a canonical key)."""
    return _encoder.encode(message)


def decode(body: bytes) -> Any:
    """A frame's body as plain data (maps, lists): for peers not yet typed and for tests."""
    return _any.decode(body)


_AT = re.compile(r"^(?P<what>.*) - at `\$\.?(?P<path>.*)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<field>.*)`$")


def why(exc: ValidationError) -> str:
    """msgspec's complaint, naming the field as a person reads it: "the field 'fid' is missing",
    "the field 'inputs[0]': expected `bytes`, got `str`"."""
    text, path = str(exc), ""
    at = _AT.match(text)
    if at is not None:
        text, path = at["what"], at["path"]
    missing = _MISSING.match(text)
    if missing is not None:
        field = f"{path}.{missing['field']}" if path else missing["field"]
        return f"malformed message: the field '{field}' is missing"
    text = text[:1].lower() + text[1:]
    if path:
        return f"malformed message: the field '{path}': {text}"
    return f"malformed message: {text}"


class TypedDecoder:
    """Decodes frame bodies into one of a union's message types, raising MalformedMessage."""

    __slots__ = ("_decode", "name")

    def __init__(self, union: Any, name: str) -> None:
        self._decode = Decoder(union).decode
        self.name = name

    def __call__(self, body: bytes) -> Any:
        try:
            return self._decode(body)
        except ValidationError as exc:
            raise MalformedMessage(why(exc)) from None
        except DecodeError as exc:
            raise MalformedMessage(f"malformed message: not msgpack ({exc})") from None


def _by_tag(union: Any) -> dict[str, type]:
    return {cls.t: cls for cls in typing.get_args(union)}


_REQUESTS = _by_tag(m.ClientRequest)
_BYTES = (bytes, bytearray, memoryview)
_FROM_CONTAINER = _by_tag(m.FromContainer)
_TO_AGENT: dict[str, type] = {cls.t: cls for cls in (m.Result, m.Ping, m.Pong)}


def check(message: Any, types: dict[str, type]) -> Any:
    """Plain data already decoded (a map) as the message type its tag names, raising MalformedMessage
    (for an unknown tag too)."""
    cls = type_named(message, types, "t", "malformed message: the field 't' (the message type) is missing",
                     "unknown message type {name}")
    if cls is m.Sandbox:  # its operation's fields are checked as its own type (`check_sandbox` gives it)
        _check_op(message, _SANDBOX_OPS, "sandbox")
    return convert_checked(message, cls)


def type_named(message: Any, types: dict[str, type], field: str, missing: str, unknown: str) -> type:
    """The type whose name a map's `field` holds (looked up first: converting to the one type is far
    faster than to a union of them), or MalformedMessage: `missing`, or `unknown` with {name} filled in."""
    if not isinstance(message, dict):
        raise MalformedMessage(f"malformed message: a message must be a map, not {type(message).__name__}")
    name = message.get(field)
    cls = types.get(name) if isinstance(name, str) else None
    if cls is None:
        raise MalformedMessage(missing if field not in message else unknown.format(name=repr(name)))
    return cls


def convert_checked(message: dict[str, Any], cls: type) -> Any:
    """A map as `cls`, or MalformedMessage naming the field."""
    try:  # bytes stay bytes: a string where bytes belong is refused (not read as base64)
        return convert(message, cls, builtin_types=_BYTES)
    except ValidationError as exc:
        raise MalformedMessage(why(exc)) from None


def _check_op(message: Any, types: dict[str, type], what: str) -> Any:
    """A sandbox operation (tagged by "op") as its type."""
    cls = type_named(message, types, "op", f"malformed message: the field 'op' (the {what} operation) is missing",
                     f"malformed message: the field 'op': unknown {what} operation {{name}}")
    return convert_checked(message, cls)


def _by_op(types: tuple[type, ...]) -> dict[str, type]:
    return {cls.__struct_config__.tag: cls for cls in types}  # type: ignore[attr-defined]


_SANDBOX_OPS = _by_op(sb.CLIENT_OPS)
_AGENT_OPS = _by_op(sb.AGENT_OPS)
_FROM_AGENT = _by_tag(sb.FromAgent)


def check_request(message: Any) -> m.ClientRequest:
    """A client's request, decoded as plain data, as its message type (MalformedMessage if it is not).
    A sandbox operation is checked as its operation's type too, and answered as its outer shape
    (`Sandbox`); the sandbox service reads it with `check_sandbox`."""
    return check(message, _REQUESTS)


def check_hello(message: Any) -> m.Hello | None:
    """A connection's first message, decoded as plain data before authentication, as a `Hello`; None if
    it is some other message, MalformedMessage (naming the field) if it is a malformed hello."""
    if not isinstance(message, dict) or message.get("t") != m.Hello.t:
        return None
    return convert_checked(message, m.Hello)


def check_client(message: Any) -> m.ClientRequest | sb.SandboxRequest:
    """A client's request, decoded as plain data, as the control plane reads it: its message type, and a
    sandbox operation as its operation's type (one conversion: the operation's type has the outer fields)."""
    cls = type_named(message, _REQUESTS, "t", "malformed message: the field 't' (the message type) is missing",
                     "unknown message type {name}")
    if cls is m.Sandbox:
        return _check_op(message, _SANDBOX_OPS, "sandbox")
    return convert_checked(message, cls)


def reply_as(value: Any, cls: type[Any]) -> Any:
    """A reply's value (plain data) as the shape it has (`sandbox.SandboxInfo`, ...), MalformedMessage if not."""
    if not isinstance(value, dict) and isinstance(value, cls):
        return value
    return convert_checked(value, cls)


def check_sandbox(message: Any) -> sb.SandboxRequest:
    """A client's sandbox operation (plain data, or already typed) as its operation's type."""
    if isinstance(message, sb.SandboxRequest):
        return message
    return _check_op(message, _SANDBOX_OPS, "sandbox")


def check_to_agent(message: Any) -> sb.AgentRequest | m.Result | m.Ping | m.Pong:
    """What the control plane sent a sandbox's agent, decoded as plain data, as its type."""
    if isinstance(message, dict) and message.get("t") == "sbagent":
        return _check_op(message, _AGENT_OPS, "sandbox agent")
    return check(message, _TO_AGENT)


def check_from_agent(message: Any) -> sb.FromAgent:
    """What a sandbox's agent sent (hostile: it runs in the sandbox), decoded as plain data, as its type."""
    return check(message, _FROM_AGENT)


def check_from_container(message: Any) -> m.FromContainer:
    """What a container's runtime sent, decoded as plain data, as its message type."""
    return check(message, _FROM_CONTAINER)


_calls = Decoder(m.Call | m.MapPut)


def decode_from_client(body: bytes) -> Any:
    """A frame of a client past its hello: a call or a map's next inputs (most of what a map sends) as its
    type at once, anything else as plain data (`check_client` reads it: one that does not decode as its
    type is answered, naming the field)."""
    try:
        return _calls.decode(body)
    except (ValidationError, DecodeError):
        return decode(body)


decode_to_client = TypedDecoder(m.ToClient, "client")
decode_to_container = TypedDecoder(m.ToContainer, "container")
decode_from_container = TypedDecoder(m.FromContainer, "container's")
decode_request = TypedDecoder(m.ClientRequest, "request")


def as_dict(message: Struct) -> dict[str, Any]:
    """A message's fields as a map (for callbacks that read a log line, say, as one)."""
    return structs.asdict(message)


def replace(message: Any, **changes: Any) -> Any:
    """A copy of a message with some fields changed."""
    return structs.replace(message, **changes)
