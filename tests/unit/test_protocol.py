"""The typed contract between processes: messages are the msgpack maps they always were, rows decode
from older peers, malformed messages are refused naming the field, frames are cut whole."""

from __future__ import annotations

import re
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
        hello = P.check_hello(P.decode(bytes(P.encode(P.Hello(id=0, role="sandbox", cid="sb-1", token="k", v=1))[4:])))
        assert hello == P.Hello(id=0, role="sandbox", cid="sb-1", token="k", v=1), hello
        fork = T.decode_to_template(T.encode_packet(T.Fork(cid="c", env={})))
        assert fork.needed == [] and fork.cid == "c"
        # A sandbox's agent runs in the sandbox's image: its requests and what it sends back.
        ask = P.decode(bytes(P.encode(P.AgentExec(id=3, exec="ex-1", argv=["ls"], pty=True))[4:]))
        assert ask["t"] == "sbagent" and ask["op"] == "exec" and ask["argv"] == ["ls"], ask
        exec_ = P.check_to_agent(ask)
        assert exec_ == P.AgentExec(id=3, exec="ex-1", argv=["ls"], pty=True), exec_
        assert exec_.stdout == "pipe" and exec_.env is None
        assert P.check_to_agent({"t": "sbagent", "op": "ack", "exec": "e", "fd": 1, "n": 5}).n == 5
        assert P.check_to_agent({"t": "res", "id": 0, "ok": True}).ok
        for bad, named in [({"t": "sbagent", "op": "exec", "exec": "e"}, "'argv' is missing"),
                           ({"t": "sbagent", "op": "rm"}, "unknown sandbox agent operation 'rm'")]:
            try:
                P.check_to_agent(bad)
            except P.MalformedMessage as exc:
                assert named in str(exc), exc
            else:
                raise AssertionError(f"{bad} decoded")
        out = P.decode(bytes(P.encode(P.SandboxOut(exec="ex-1", fd=1, data=b"hi"))[4:]))
        assert out == {"t": "sbout", "exec": "ex-1", "fd": 1, "data": b"hi"}, out
        entry = P.decode(bytes(P.encode(P.Result(id=1, ok=True, v=[P.FileEntry(path="/a", type="file", size=1,
                                                                                 mtime=0.5, mode=0o644)]))[4:]))
        assert entry["v"] == [{"path": "/a", "type": "file", "size": 1, "mtime": 0.5, "mode": 0o644}], entry
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


def test_the_control_plane_reads_a_sandbox_operation_as_its_operations_type():
    body = {"t": P.SANDBOX, "op": "exec", "sandbox": "sb-1", "exec": "ex-1", "argv": ["echo", "hi"], "id": 4}
    assert P.check_client(body) == P.SandboxExec(sandbox="sb-1", exec="ex-1", argv=["echo", "hi"], id=4)
    assert P.check_client({"t": P.CALL_GET, "call": "c", "id": 1}) == P.CallGet(call="c", id=1)
    for bad, expected in [({"t": P.SANDBOX, "op": "exec", "sandbox": "sb-1"}, "'argv' is missing"),
                          ({"t": P.SANDBOX, "op": "rm"}, "unknown sandbox operation 'rm'"),
                          ({"t": "nope"}, "unknown message type 'nope'")]:
        with pytest.raises(P.MalformedMessage, match=expected):
            P.check_client(bad)


def test_a_hello_is_checked_as_its_type_before_authentication():
    """The control plane's first read of a connection: what a client sends (the same map as ever) decodes
    as a `Hello`; a malformed one names its field; another message is not a hello."""
    sent = P.decode(_body(P.Hello(id=1, role="client", token="t", v=P.PROTOCOL_VERSION)))
    assert sent == {"t": P.HELLO, "id": 1, "role": "client", "token": "t", "v": P.PROTOCOL_VERSION}
    assert P.check_hello(sent) == P.Hello(id=1, role="client", token="t", v=P.PROTOCOL_VERSION)
    with pytest.raises(P.MalformedMessage, match="the field 'token'"):
        P.check_hello({**sent, "token": 5})
    with pytest.raises(P.MalformedMessage, match="the field 'role' is missing"):
        P.check_hello({"t": P.HELLO, "id": 1, "v": 1})
    assert P.check_hello({"t": P.CALL_GET, "id": 1}) is None and P.check_hello([P.HELLO]) is None


def test_a_field_left_out_means_what_the_control_plane_reads_for_it():
    """Defaults are not sent: each must be what the reader assumes for a missing field."""
    assert "last" not in P.decode(_body(P.Call(call="c", fid="f", kind=P.KIND_UNARY, inputs=[])))  # closed
    assert P.decode(_body(P.Call(call="c", fid="f", kind=P.KIND_MAP, inputs=[], last=False)))["last"] is False
    assert "last" not in P.decode(_body(P.MapPut(call="c", inputs=[])))  # more to come
    assert P.decode(_body(P.MapPut(call="c", inputs=[], last=True)))["last"] is True


def test_sandbox_operations_travel_as_their_types():
    """A client's sandbox operation is `{"t": "sandbox", "op": ...}` on the wire, checked as its op's type."""
    body = P.decode(_body(P.SandboxExec(sandbox="sb-1", exec="ex-1", argv=["echo", "hi"], id=4)))
    assert body["t"] == P.SANDBOX and body["op"] == "exec" and body["argv"] == ["echo", "hi"] and body["id"] == 4
    assert P.check_sandbox(body) == P.SandboxExec(sandbox="sb-1", exec="ex-1", argv=["echo", "hi"], id=4)
    assert P.check_request(body) == P.Sandbox(op="exec", sandbox="sb-1", id=4)  # the gateway's view
    stdin = P.check_sandbox(P.decode(_body(P.SandboxStdin(sandbox="sb-1", exec="ex-1", data=b"x", eof=True))))
    assert stdin == P.SandboxStdin(sandbox="sb-1", exec="ex-1", data=b"x", eof=True)
    typed = P.SandboxGet(sandbox="sb-1")
    assert P.check_sandbox(typed) is typed
    # What a peer built as a plain map reads the same (defaults for what it left out).
    fs = P.check_sandbox({"t": P.SANDBOX, "op": "fs", "sandbox": "sb-1", "action": "mkdir", "path": "/a", "id": 1})
    assert fs == P.SandboxFs(sandbox="sb-1", action="mkdir", path="/a", id=1) and fs.parents is False


@pytest.mark.parametrize(("bad", "expected"), [
    ({"t": P.SANDBOX}, "the field 'op' (the sandbox operation) is missing"),
    ({"t": P.SANDBOX, "op": 5}, "unknown sandbox operation 5"),
    ({"t": P.SANDBOX, "op": "exec", "sandbox": "sb-1"}, "the field 'argv' is missing"),
    ({"t": P.SANDBOX, "op": "exec", "sandbox": "sb-1", "argv": [1]}, "the field 'argv[0]'"),
    ({"t": P.SANDBOX, "op": "stdin", "sandbox": "sb-1", "exec": "e", "data": "text"}, "the field 'data'"),
    ({"t": P.SANDBOX, "op": "ack", "sandbox": "sb-1", "exec": "e", "fd": 3, "n": 1}, "the field 'fd'"),
    ({"t": P.SANDBOX, "op": "fs", "sandbox": "sb-1", "action": "chown", "path": "/"}, "the field 'action'"),
    ({"t": P.SANDBOX, "op": "create", "ports": "80"}, "the field 'ports'"),
])
def test_a_malformed_sandbox_operation_is_refused_naming_the_field(bad, expected):
    for check in (P.check_request, P.check_sandbox):  # at the gateway, and by the sandbox service
        with pytest.raises(P.MalformedMessage, match=re.escape(expected)):
            check(bad)


def test_what_a_sandbox_agent_sends_is_checked_as_its_type():
    assert P.check_from_agent({"t": P.SANDBOX_EXIT, "exec": "ex-1", "code": 0}) == P.SandboxExit(exec="ex-1", code=0)
    assert isinstance(P.check_from_agent({"t": P.READY}), P.Ready)
    for bad in ({"t": P.SANDBOX_OUT, "exec": "ex-1", "fd": 1}, {"t": P.CALL}, {"t": P.SANDBOX_OUT, "exec": 1,
                                                                                  "fd": 1, "data": b""}):
        with pytest.raises(P.MalformedMessage):
            P.check_from_agent(bad)


_CHUNK_MESSAGES = """
from homeport import _protocol as P
MESSAGES = [
    P.Call(call="c", fid="f", kind="map", inputs=[P.CallInput(0, [b"a", b"b"], None), P.CallInput(2, b"big", "m")],
           last=False),
    P.Inputs(items=[P.InputRow(4, [b"a", b"b"], None, "c"), P.InputRow(5, b"one", None, "c")]),
    P.ContainerOutputs(items=[], chunks=[P.ChunkOutputRow(4, [0, 1], [P.SUCCESS, P.FAILURE], [b"r", {"repr": "E"}],
                                                          0.5, 0.25)]),
    P.Outputs(call="c", items=[P.CallOutput(2, P.SUCCESS, b"r")],
              chunks=[P.CallChunkOutput(0, [0, 1], [P.SUCCESS, P.SUCCESS], [b"x", b"y"])]),
]
"""


def test_a_maps_chunks_travel_the_same_with_and_without_msgspec():
    """A chunk of a map's inputs (a row whose args are a list) and its outputs: the same bytes from the
    pure-Python stand-in as from msgspec, and each side decodes them back to the same messages."""
    namespace: dict = {}
    exec(_CHUNK_MESSAGES, namespace)
    native = [bytes(P.encode(m)).hex() for m in namespace["MESSAGES"]]
    assert P.decode_request(bytes(P.encode(namespace["MESSAGES"][0]))[4:]) == namespace["MESSAGES"][0]
    assert P.decode_to_container(bytes(P.encode(namespace["MESSAGES"][1]))[4:]) == namespace["MESSAGES"][1]
    assert P.decode_from_container(bytes(P.encode(namespace["MESSAGES"][2]))[4:]) == namespace["MESSAGES"][2]
    assert P.decode_to_client(bytes(P.encode(namespace["MESSAGES"][3]))[4:]) == namespace["MESSAGES"][3]
    script = "import sys\nsys.modules['msgspec'] = None\n" + _CHUNK_MESSAGES + textwrap.dedent("""
        from homeport._protocol import _msgspec
        assert not _msgspec.NATIVE
        print(repr([bytes(P.encode(m)).hex() for m in MESSAGES]))
        assert P.decode_to_container(bytes(P.encode(MESSAGES[1]))[4:]) == MESSAGES[1]
        assert P.decode_from_container(bytes(P.encode(MESSAGES[2]))[4:]) == MESSAGES[2]
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert eval(done.stdout) == native
