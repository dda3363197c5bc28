"""The typed contract between processes: messages are the msgpack maps they always were, rows decode
from older peers, malformed messages are refused naming the field, frames are cut whole."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from homeport import _protocol as P
from homeport._protocol import templates as T


def _body(message) -> bytes:
    return bytes(P.encode(message)[P.HEADER.size:])


@pytest.mark.parametrize(("typed", "plain"), [
    (P.Call(call="fc-1", fid="fu-1", kind=P.KIND_UNARY, inputs=[P.CallInput(0, b"a", None)]),
     {"t": P.CALL, "call": "fc-1", "fid": "fu-1", "kind": P.KIND_UNARY, "inputs": [[0, b"a", None]]}),
    (P.CallCancel(call="fc-1", id=0), {"t": P.CALL_CANCEL, "id": 0, "call": "fc-1"}),
    (P.Result(id=3, ok=False, code=P.errors.NOT_FOUND, msg="gone"),
     {"t": P.RESULT, "id": 3, "ok": False, "code": "not_found", "msg": "gone"}),
    (P.Inputs(items=[P.InputRow(7, b"x", "m", "fc-2")]), {"t": P.INPUTS, "items": [[7, b"x", "m", "fc-2"]]}),
    (P.ContainerRelease(ids=[1, 2], leaving=True), {"t": P.CONTAINER_RELEASE, "ids": [1, 2], "leaving": True}),
    (P.Ping(), {"t": P.PING}),
])
def test_a_typed_message_is_the_map_it_always_was(typed, plain):
    assert P.decode(_body(typed)) == plain
    decoder = P.decode_to_container if type(typed) in (P.Inputs, P.Ping) else P.decode_request
    if type(typed) in (P.Result,):
        decoder = P.decode_to_client
    if type(typed) is P.ContainerRelease:
        decoder = P.decode_from_container
    assert decoder(_body(plain)) == typed  # what an untyped peer sends decodes as the type


def test_every_message_type_has_its_tag_as_t():
    assert P.Call.t == P.CALL and P.Outputs.t == P.OUTPUTS and P.ContainerOutputs.t == P.CONTAINER_OUTPUTS
    assert P.decode(_body(P.ContainerGen(input=1, items=[b"v"])))["t"] == P.CONTAINER_GEN


def test_rows_of_older_peers_decode_with_their_defaults():
    outs = P.decode_from_container(_body({"t": P.CONTAINER_OUTPUTS, "items": [[1, P.SUCCESS, b"r", 0.5]]}))
    assert outs.items == [P.OutputRow(1, P.SUCCESS, b"r", 0.5, None)]
    ins = P.decode_to_container(_body({"t": P.INPUTS, "items": [[1, b"a", None]]}))
    assert ins.items[0].call_id is None


@pytest.mark.parametrize(("plain", "expected"), [
    ({"t": P.CALL, "call": "c", "kind": "unary", "inputs": []}, "the field 'fid' is missing"),
    ({"t": P.CALL, "fid": 3, "call": "c", "kind": "unary", "inputs": []}, "the field 'fid': expected `str`"),
    ({"t": P.CALL, "fid": "f", "call": "c", "kind": "unary", "inputs": [[0, b"", None, 4]]}, "'inputs[0]'"),
    ({"t": P.CALL, "fid": "f", "call": "c", "kind": "unary", "inputs": [[0, "not bytes"]]}, "'inputs[0]'"),
    ({"t": P.MAP_PUT, "call": "c", "inputs": "x"}, "the field 'inputs'"),
    ({"t": P.VOLUME, "op": "put", "name": "v", "files": [["p", "not bytes"]]}, "'files[0][1]'"),
    ({"t": P.VOLUME, "op": "read", "name": "v", "path": "p", "offset": True}, "the field 'offset'"),
    ({"t": P.SECRET_CREATE, "name": "s", "values": ["A"]}, "the field 'values'"),
    ({"t": P.CALL_GET}, "the field 'call' is missing"),
    ([1, 2], "expected `object`"),
    ({"x": 1}, "the field 't' is missing"),
])
def test_a_malformed_request_is_refused_naming_the_field(plain, expected):
    with pytest.raises(P.MalformedMessage, match="malformed message") as info:
        P.decode_request(_body(plain))
    assert expected in str(info.value), str(info.value)


def test_bytes_that_are_not_msgpack_are_a_malformed_message():
    with pytest.raises(P.MalformedMessage, match="not msgpack"):
        P.decode_to_client(b"\xc1")


def test_frames_are_cut_whole_however_the_bytes_arrive():
    data = bytes(P.encode(P.Ping()) + P.encode(P.GenItems(call="c", items=[b"x" * 100])))
    reader = P.FrameReader()
    got = []
    for i in range(len(data)):
        reader.feed(data[i:i + 1])
        body = reader.next()
        if body is not None:
            got.append(P.decode_to_client(body))
    assert got == [P.Ping(), P.GenItems(call="c", items=[b"x" * 100])] and len(reader) == 0
    reader.feed(P.HEADER.pack(10) + b"12")
    assert reader.next() is None and reader.missing() == 8


def test_a_frame_over_the_limit_is_refused_before_it_is_read():
    reader = P.FrameReader(max_frame=16)
    reader.feed(P.HEADER.pack(1 << 20))
    with pytest.raises(P.FrameTooLarge) as info:
        reader.next()
    assert info.value.size == 1 << 20 and len(reader) == 0


def test_template_messages_round_trip():
    fork = T.Fork(cid="ta-1", env={"A": "1"}, needed=[["/x", True]], held=True)
    assert T.decode_to_template(T.encode_packet(fork)) == fork
    assert T.decode_from_template(T.encode_packet(T.Exited(cid="ta-1", code=3))) == T.Exited(cid="ta-1", code=3)
    assert T.decode_start(T.encode_packet(T.TemplateStart(definition_path="/d"))).definition_path == "/d"


def test_without_msgspec_the_same_messages_travel():
    """A container on another Python version than the control plane's cannot load msgspec's compiled
    core: the pure-Python stand-in encodes and decodes the same wire format."""
    script = textwrap.dedent("""
        import sys
        sys.modules["msgspec"] = None  # as an interpreter that cannot import it
        from homeport import _protocol as P
        from homeport._protocol import _msgspec, templates as T
        assert not _msgspec.NATIVE
        body = bytes(P.encode({"t": "inputs", "items": [[1, b"a", None, "fc-1"], [2, b"b", "m"]]})[4:])
        msg = P.decode_to_container(body)
        assert msg == P.Inputs(items=[P.InputRow(1, b"a", None, "fc-1"), P.InputRow(2, b"b", "m")]), msg
        out = P.decode(bytes(P.encode(P.ContainerOutputs(items=[P.OutputRow(1, 0, b"r", 0.5)]))[4:]))
        assert out == {"t": "couts", "items": [[1, 0, b"r", 0.5]]}, out
        res = P.decode_to_client(bytes(P.encode({"t": "res", "id": 2, "ok": True, "v": {"x": 1}})[4:]))
        assert res == P.Result(id=2, ok=True, v={"x": 1}), res
        try:
            P.decode_request(bytes(P.encode({"t": "call", "call": "c"})[4:]))
        except P.MalformedMessage as exc:
            assert "'fid' is missing" in str(exc), exc
        else:
            raise AssertionError("a call without fid decoded")
        fork = T.decode_to_template(T.encode_packet(T.Fork(cid="c", env={})))
        assert fork.needed == [] and fork.cid == "c"
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr


def test_a_map_already_decoded_is_checked_as_its_type():
    call = P.check_request({"t": P.CALL, "fid": "f", "call": "c", "kind": "unary", "inputs": [[0, b"a", None]], "id": 1})
    assert call == P.Call(call="c", fid="f", kind="unary", inputs=[P.CallInput(0, b"a", None)], id=1)
    outs = P.check_from_container({"t": P.CONTAINER_OUTPUTS, "items": [[1, P.SUCCESS, b"r", 0.5, 0.1]]})
    assert outs.items[0].cpu == 0.1
    for bad, expected in [({"t": "nope"}, "unknown message type 'nope'"), ([1], "must be a map"),
                          ({"x": 1}, "'t'"), ({"t": P.CALL_GET}, "the field 'call' is missing")]:
        with pytest.raises(P.MalformedMessage, match=expected):
            P.check_request(bad)


def test_a_field_left_out_means_what_the_control_plane_reads_for_it():
    """Defaults are not sent: each must be what the reader assumes for a missing field."""
    assert "last" not in P.decode(_body(P.Call(call="c", fid="f", kind=P.KIND_UNARY, inputs=[])))  # closed
    assert P.decode(_body(P.Call(call="c", fid="f", kind=P.KIND_MAP, inputs=[], last=False)))["last"] is False
    assert "last" not in P.decode(_body(P.MapPut(call="c", inputs=[])))  # more to come
    assert P.decode(_body(P.MapPut(call="c", inputs=[], last=True)))["last"] is True
