"""One type per Dict and Queue operation: what a DICT or QUEUE message's "op" names, with its own fields.

The outer message (`messages.DictOp`, `messages.QueueOp`) is the map that travels, tagged by "t"; the
operation is the same map read again as the type its "op" names (`check_operation`), so a field an
operation needs that is missing or of the wrong type is refused naming it. The fields left at their
defaults are not sent; a reader takes the default from the type. Keys and values are pickled bytes.
"""

from __future__ import annotations

import typing
from typing import Any, Union

from ._msgspec import Struct, structs
from .codec import convert_checked, type_named

DEFAULT_PARTITION_TTL = 24 * 3600.0  # a Queue partition is cleared this long after its last put


class Operation(Struct, tag_field="op", omit_defaults=True, kw_only=True):
    """Base of every operation; its tag (the field "op") is the operation's name."""


# --- on the objects themselves (both kinds) ------------------------------------------------------------
class Lookup(Operation, tag="lookup", kw_only=True):
    name: str
    create_if_missing: bool = False


class Create(Operation, tag="create", kw_only=True):
    name: str
    allow_existing: bool = False


class Ephemeral(Operation, tag="ephemeral", kw_only=True):
    pass


class ById(Operation, tag="by_id", kw_only=True):
    oid: str


class ListObjects(Operation, tag="list", kw_only=True):
    pass


class Delete(Operation, tag="delete", kw_only=True):
    oid: str


class Release(Operation, tag="release", kw_only=True):
    """The end of an ephemeral object's `with` block (only its creator's connection may)."""

    oid: str


# --- Dict contents ---------------------------------------------------------------------------------------
class DictGet(Operation, tag="get", kw_only=True):
    oid: str
    key: bytes


class DictContains(Operation, tag="contains", kw_only=True):
    oid: str
    key: bytes


class DictPop(Operation, tag="pop", kw_only=True):
    oid: str
    key: bytes


class DictPut(Operation, tag="put", kw_only=True):
    oid: str
    key: bytes
    value: bytes
    skip_if_exists: bool = False


class DictUpdate(Operation, tag="update", kw_only=True):
    oid: str
    items: list[tuple[bytes, bytes]] = []  # noqa: RUF012 - a struct copies an empty default per instance


class DictLen(Operation, tag="len", kw_only=True):
    oid: str


class DictClear(Operation, tag="clear", kw_only=True):
    oid: str


class DictPage(Operation, tag="page", kw_only=True):
    """Entries after the cursor `after`, in no promised order."""

    oid: str
    after: int = 0


# --- Queue contents ---------------------------------------------------------------------------------------
class _QueueOperation(Operation, kw_only=True):
    oid: str
    partition: bytes | None = None  # None: the default partition
    wait: float | None = None  # seconds the control plane may wait (capped there)
    wait_id: str | None = None  # names a wait, so that `cancel_wait` can end it


class QueuePut(_QueueOperation, tag="put", kw_only=True):
    values: list[bytes] = []  # noqa: RUF012 - a struct copies an empty default per instance
    partition_ttl: float = DEFAULT_PARTITION_TTL


class QueueGet(_QueueOperation, tag="get", kw_only=True):
    n: int = 1


class QueueNext(_QueueOperation, tag="next", kw_only=True):
    """Items after seq `after`, without removing them."""

    after: int = 0


class QueueLen(_QueueOperation, tag="len", kw_only=True):
    total: bool = False


class QueueClear(_QueueOperation, tag="clear", kw_only=True):
    all: bool = False


class QueueCancelWait(_QueueOperation, tag="cancel_wait", kw_only=True):
    """The client gave up on the blocking get or put named `wait_id`."""


ObjectOperation = Union[Lookup, Create, Ephemeral, ById, ListObjects, Delete, Release]  # noqa: UP007
DictOperation = Union[  # noqa: UP007
    Lookup, Create, Ephemeral, ById, ListObjects, Delete, Release,
    DictGet, DictContains, DictPop, DictPut, DictUpdate, DictLen, DictClear, DictPage,
]
QueueOperation = Union[  # noqa: UP007
    Lookup, Create, Ephemeral, ById, ListObjects, Delete, Release,
    QueuePut, QueueGet, QueueNext, QueueLen, QueueClear, QueueCancelWait,
]
OBJECT_OPERATIONS = (Lookup, Create, Ephemeral, ById, ListObjects, Delete, Release)
_BYTES = (bytes, bytearray, memoryview)


def _by_name(union: Any) -> dict[str, type]:
    return {cls.__struct_config__.tag: cls for cls in typing.get_args(union)}


_BY_KIND = {"dict": _by_name(DictOperation), "queue": _by_name(QueueOperation)}
_KIND_NAMES = {"dict": "Dict", "queue": "Queue"}


def name_of(operation: Operation) -> str:
    """The operation's name: its "op" on the wire."""
    return type(operation).__struct_config__.tag  # type: ignore[return-value]


def fields_of(operation: Operation) -> dict[str, Any]:
    """The operation's fields with "op", as the outer message (`DictOp`, `QueueOp`) takes them."""
    return {"op": name_of(operation), **structs.asdict(operation)}


def check_operation(kind: str, message: dict[str, Any]) -> Any:
    """A DICT or QUEUE message (a map; its other keys, "t" and "id", are not the operation's) as the
    operation type its "op" names, raising MalformedMessage that names the field."""
    cls = type_named(message, _BY_KIND[kind], "op", "malformed message: the field 'op' is missing",
                     f"malformed message: the field 'op': unknown {_KIND_NAMES[kind]} operation {{name}}")
    return convert_checked(message, cls)
