"""Dict and Queue operations are typed: each "op" decodes as its own type, defaults come from the type,
and a malformed operation is refused naming the field. The wire stays the map it was."""

from __future__ import annotations

import re

import pytest

from homeport import _protocol as P
from homeport._protocol import dictqueue as D


def test_each_op_decodes_as_its_type_with_the_defaults_of_the_type():
    op = D.check_operation("queue", {"t": "queue", "id": 7, "op": "get", "oid": "qu-1"})
    assert isinstance(op, D.QueueGet)
    assert (op.n, op.partition, op.wait, op.wait_id) == (1, None, None, None)
    put = D.check_operation("queue", {"t": "queue", "op": "put", "oid": "qu-1", "values": [b"x"]})
    assert isinstance(put, D.QueuePut) and put.partition_ttl == D.DEFAULT_PARTITION_TTL
    page = D.check_operation("dict", {"t": "dict", "op": "page", "oid": "di-1"})
    assert isinstance(page, D.DictPage) and page.after == 0
    # The same names mean the kind's own operation.
    assert isinstance(D.check_operation("dict", {"op": "put", "oid": "di-1", "key": b"k", "value": b"v"}), D.DictPut)
    assert isinstance(D.check_operation("dict", {"op": "lookup", "name": "d"}), D.Lookup)


@pytest.mark.parametrize("kind, msg, field", [
    ("dict", {"op": "put", "oid": "di-1", "value": b"v"}, "'key' is missing"),
    ("dict", {"op": "put", "oid": "di-1", "key": "k", "value": b"v"}, "'key'"),
    ("dict", {"op": "get", "key": b"k"}, "'oid' is missing"),
    ("dict", {"op": "update", "oid": "di-1", "items": [[b"k"]]}, "'items[0]'"),
    ("dict", {"op": "page", "oid": "di-1", "after": "0"}, "'after'"),
    ("dict", {"op": "next", "oid": "di-1"}, "'op'"),  # a Queue's operation, not a Dict's
    ("queue", {"op": "get", "oid": "qu-1", "n": "5"}, "'n'"),
    ("queue", {"op": "put", "oid": "qu-1", "values": ["x"]}, "'values[0]'"),
    ("queue", {"op": "put", "oid": "qu-1", "partition_ttl": True}, "'partition_ttl'"),
    ("queue", {"op": "frobnicate", "oid": "qu-1"}, "'op'"),
    ("queue", {"oid": "qu-1"}, "'op'"),
    ("queue", {"op": "lookup"}, "'name' is missing"),
])
def test_a_malformed_operation_is_refused_naming_the_field(kind, msg, field):
    with pytest.raises(P.MalformedMessage, match=re.escape(field)):
        D.check_operation(kind, msg)


def test_the_wire_is_the_map_it_was():
    """The SDK sends an operation as the outer DICT/QUEUE message: "t", "op", then the fields not at
    their default; the control plane reads it back as the same operation."""
    op = D.QueueGet(oid="qu-1", n=3, wait=1.5, wait_id="w")
    msg = P.QueueOp(id=4, **D.fields_of(op))
    plain = P.decode(P.encode(msg)[P.HEADER.size:])
    assert plain == {"t": "queue", "id": 4, "op": "get", "oid": "qu-1", "n": 3, "wait": 1.5, "wait_id": "w"}
    assert D.check_operation("queue", plain) == op
    update = D.DictUpdate(oid="di-1", items=[(b"k", b"v")])
    plain = P.decode(P.encode(P.DictOp(**D.fields_of(update)))[P.HEADER.size:])
    assert plain == {"t": "dict", "op": "update", "oid": "di-1", "items": [[b"k", b"v"]]}
    assert D.check_operation("dict", plain) == update
