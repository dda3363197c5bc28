"""Dict and Queue operations are typed: each "op" decodes as its own type, defaults come from the type,
and a malformed operation is refused naming the field. The wire stays the map it was."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

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


def test_without_msgspec_the_same_operations_travel():
    """A container whose Python cannot load msgspec builds and checks the operations with the stand-in."""
    script = textwrap.dedent("""
        import sys
        sys.modules["msgspec"] = None
        from homeport import _protocol as P
        from homeport._protocol import _msgspec, dictqueue as D
        assert not _msgspec.NATIVE
        op = D.QueuePut(oid="qu-1", values=[b"x"], wait=1.0, wait_id="w")
        plain = P.decode(bytes(P.encode(P.QueueOp(id=3, **D.fields_of(op)))[4:]))
        assert plain["t"] == "queue" and plain["op"] == "put" and plain["values"] == [b"x"], plain
        assert D.check_operation("queue", plain) == op
        try:
            D.check_operation("dict", {"op": "put", "oid": "d", "value": b"v"})
        except P.MalformedMessage as exc:
            assert "'key' is missing" in str(exc), exc
        else:
            raise AssertionError("a put without key decoded")
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr
