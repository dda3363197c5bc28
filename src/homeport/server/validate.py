"""The shape of what authenticated peers send, checked before a message reaches the services.

A client (or a container's user code, which can write on its own connection) may send any msgpack
map. Each message type names the fields it needs and their types; a message that lacks one, or has
one of another type, is answered with an `invalid` error that says which, instead of failing deep in
a service with `internal: KeyError: 'fid'`.
"""

from __future__ import annotations

from typing import Any

from .. import _protocol as P

_STR, _LIST, _DICT, _INT = (str,), (list, tuple), (dict,), (int,)
_OPT_STR = (str, type(None))
_OPT_NUM = (int, float, type(None))

# message type -> {field: accepted types}; fields not listed are optional or checked by the service.
_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    P.CALL: {"fid": _STR, "call": _STR, "kind": _STR, "inputs": _LIST},
    P.MAP_PUT: {"call": _STR, "inputs": _LIST},
    P.APP_CREATE: {"name": _OPT_STR},
    P.APP_PUBLISH: {"app_id": _STR, "functions": _LIST},
    P.APP_DEPLOY: {"name": _STR, "functions": _LIST},
    P.APP_STOP: {"app_id": _STR},
    P.APP_LOOKUP: {"name": _STR},
    P.APP_HISTORY: {"name": _STR},
    P.APP_LOGS: {"app_id": _STR},
    P.FUNCTION_LOOKUP: {"name": _STR, "app": _OPT_STR},
    P.FUNCTION_BIND: {"fid": _STR},
    P.CALL_GET: {"call": _STR, "timeout": _OPT_NUM},
    P.CALL_CANCEL: {"call": _STR},
    P.SECRET_CREATE: {"name": _STR, "values": _DICT},
    P.SECRET_DELETE: {"name": _STR},
    P.VOLUME: {"op": _STR, "name": _OPT_STR},
    P.PROXY_TOKEN: {"op": _STR},
    P.IMAGE_BUILD: {"images": _LIST},
    P.CONTAINER_STOP: {"container_id": _STR},
}
_VOLUME_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "ls": {"path": _OPT_STR},
    "read": {"path": _STR, "offset": (int, type(None)), "length": (int, type(None))},
    "put": {"files": _LIST},
    "rm": {"path": _STR},
    "cp": {"sources": _LIST, "dest": _STR},
}
_NAMES = {str: "a string", list: "a list", tuple: "a list", dict: "a map", int: "an integer", float: "a number",
          type(None): "nil"}


def _check(msg: dict[str, Any], fields: dict[str, tuple[type, ...]], what: str) -> str | None:
    for field, types in fields.items():
        value = msg.get(field)
        if field not in msg and type(None) not in types:
            return f"malformed {what} message: the field '{field}' is missing"
        if field in msg and (not isinstance(value, types) or (isinstance(value, bool) and bool not in types)):
            want = " or ".join(dict.fromkeys(_NAMES.get(t, t.__name__) for t in types))
            return f"malformed {what} message: the field '{field}' must be {want}, not {type(value).__name__}"
    return None


def _inputs_problem(inputs: Any, what: str) -> str | None:
    for item in inputs:
        if not (isinstance(item, (list, tuple)) and len(item) == 3 and isinstance(item[0], int)
                and isinstance(item[1], bytes) and isinstance(item[2], (str, type(None)))):
            return f"malformed {what} message: each input must be [index, pickled arguments, method or nil]"
    return None


def problem(msg: Any) -> str | None:
    """What is wrong with the shape of a client message, or None."""
    if not isinstance(msg, dict):
        return f"malformed message: a message must be a map, not {type(msg).__name__}"
    t = msg.get("t")
    if not isinstance(t, str):
        return "malformed message: the field 't' (the message type) is missing or not a string"
    if "id" in msg and not isinstance(msg["id"], (int, str)):
        return "malformed message: the field 'id' must be an integer or a string"
    fields = _FIELDS.get(t)
    if fields is None:
        return None  # unknown types get their own answer
    why = _check(msg, fields, t)
    if why is None and t in (P.CALL, P.MAP_PUT):
        why = _inputs_problem(msg["inputs"], t)
    if why is None and t == P.VOLUME and msg["op"] in _VOLUME_FIELDS:
        why = _check(msg, _VOLUME_FIELDS[msg["op"]], f"volume {msg['op']}")
        if why is None and msg["op"] == "put":
            bad = [f for f in msg["files"] if not (isinstance(f, (list, tuple)) and len(f) == 2
                                                   and isinstance(f[0], str) and isinstance(f[1], bytes))]
            if bad:
                why = "malformed volume put message: each file must be [path, bytes]"
        if why is None and msg["op"] == "cp" and not all(isinstance(s, str) for s in msg["sources"]):
            why = "malformed volume cp message: the sources must be strings"
    return why
