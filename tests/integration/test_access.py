"""What a container's user code can reach through the control plane: its own inputs and its app's calls.

User code runs in the same process as the container's runtime, so it can read the container's
credentials and write on the runtime's own connection. Neither may let it answer for other callers'
inputs or manage the installation.
"""

import pickle
import socket
import struct

import msgpack
import pytest

from homeport import _protocol as P
from homeport.testing import app_fixture

pytestmark = pytest.mark.integration

ERROR = 7  # the control plane's output status for a platform error


trust = app_fixture("trust", "app", "other")


def test_a_container_cannot_answer_for_inputs_it_does_not_hold(trust, tmp_path):
    gate = tmp_path / "gate"
    call = trust.victim.spawn(str(gate))
    gen = trust.victim_gen.remote_gen(str(gate))
    assert next(gen) == "first"
    trust.forge.remote(200)  # forged outputs and generator items for every recent input id
    gate.touch()
    assert call.get(timeout=60) == "real"
    assert list(gen) == ["second"]


def test_container_credentials_cannot_manage_the_installation(trust, platform):
    cid, token, app_id = trust.credentials.remote()
    with _Raw(platform, {"cid": cid, "ctoken": token}) as c:
        refused = [
            {"t": P.SERVER_SHUTDOWN},
            {"t": P.SERVER_STATUS},
            {"t": P.CONTAINER_LIST},
            {"t": P.CONTAINER_STOP, "container_id": cid},
            {"t": P.APP_LIST},
            {"t": P.APP_STOP, "app_id": app_id},
            {"t": P.APP_CREATE, "name": "x"},
            {"t": P.APP_DEPLOY, "name": "x", "functions": []},
            {"t": P.APP_LOGS, "app_id": app_id},
            {"t": P.SECRET_LIST},
            {"t": P.SECRET_CREATE, "name": "x", "values": {"A": "1"}},
            {"t": P.SECRET_DELETE, "name": "x"},
            {"t": P.VOLUME, "op": "list"},
            {"t": P.VOLUME, "op": "delete", "name": "x"},
            {"t": P.VOLUME, "op": "create", "name": "x"},
            {"t": P.IMAGE_BUILD, "images": []},
        ]
        for msg in refused:
            reply = c.request(msg)
            assert reply["ok"] is False and reply["code"] == "auth", (msg, reply)
        assert "not allowed from code running inside a container" in c.request({"t": P.SERVER_SHUTDOWN})["msg"]

        # What it needs still works: look up and call the functions of its own app ...
        found = c.request({"t": P.FUNCTION_LOOKUP, "app": "", "app_id": app_id, "name": "echo"})
        assert found["ok"], found
        status, data = c.call(found["v"]["fid"], "fc-own", 21)
        assert status == P.SUCCESS and pickle.loads(data) == 21
        # ... but not those of another app that is not deployed.
        other_id = trust.other.app_id
        assert c.request({"t": P.FUNCTION_LOOKUP, "app": "", "app_id": other_id, "name": "other_fn"})["code"] == "auth"
        status, data = c.call(trust.other_fn.object_id, "fc-other", 1)
        assert status == ERROR and data["code"] == "auth"

    # A second connection posing as the container's runtime is refused too.
    with _Raw(platform, None) as c:
        reply = c.request({"t": P.HELLO, "role": "container", "cid": cid, "token": token})
        assert reply["ok"] is False and reply["code"] == "auth"

    assert trust.echo.remote("still served") == "still served"
    assert trust.other_fn.remote(2) == 2


class _Raw:
    """A hand-made client connection: a hello with the given credentials, then raw messages."""

    def __init__(self, platform, creds: dict | None) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(30)
        self.sock.connect(str(platform.state_dir / "server.sock"))
        self.ids = iter(range(1, 1 << 30))
        if creds is not None:
            reply = self.request({"t": P.HELLO, "role": "client", **creds, "v": P.PROTOCOL_VERSION})
            assert reply["ok"], reply

    def __enter__(self) -> "_Raw":
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, msg: dict) -> None:
        body = msgpack.packb(msg, use_bin_type=True)
        self.sock.sendall(struct.pack(">I", len(body)) + body)

    def recv(self) -> dict:
        (n,) = struct.unpack(">I", self._read(4))
        return msgpack.unpackb(self._read(n), raw=False, strict_map_key=False)

    def request(self, msg: dict) -> dict:
        rid = next(self.ids)
        self.send({**msg, "id": rid})
        while True:
            reply = self.recv()
            if reply.get("t") == P.RESULT and reply.get("id") == rid:
                return reply

    def call(self, fid: str, call_id: str, arg) -> tuple[int, object]:
        args = pickle.dumps(((arg,), {}))
        self.send({"t": P.CALL, "call": call_id, "fid": fid, "kind": P.KIND_UNARY, "inputs": [[0, args, None]]})
        while True:
            msg = self.recv()
            if msg.get("t") == P.OUTPUTS and msg.get("call") == call_id:
                _, status, data = msg["items"][0]
                return status, data

    def _read(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("the control plane closed the connection")
            buf += chunk
        return buf
