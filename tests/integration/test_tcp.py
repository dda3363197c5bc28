"""Containers that reach the control plane over TCP (`HOMEPORT_LISTEN`, what the Ray backend uses for
containers on other machines): the same protocol with the container's own credentials; the
installation token is refused there, admin clients keep the Unix socket."""

import os
import socket
import struct

import msgpack
import pytest

from homeport import _protocol as P
from homeport.testing import Platform, homeport_cli, running

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def over_tcp(apps_path):
    saved = os.environ.get(P.ENV_LISTEN)
    os.environ[P.ENV_LISTEN] = "127.0.0.1:0"
    try:
        with Platform() as platform, running("over_tcp") as over_tcp:
            yield over_tcp, platform
    finally:
        if saved is None:
            os.environ.pop(P.ENV_LISTEN, None)
        else:
            os.environ[P.ENV_LISTEN] = saved


def test_containers_are_told_a_tcp_address_and_call_other_functions_over_it(over_tcp):
    app, _ = over_tcp
    assert app.address.remote().startswith("tcp://127.0.0.1:")
    assert app.calls_another.remote(5) == (25, [0, 1, 4, 9, 16])


def test_server_status_shows_where_containers_connect(over_tcp):
    out = homeport_cli("server", "status")
    assert out.returncode == 0 and "Containers connect to tcp://127.0.0.1:" in out.stdout


def test_the_tcp_port_takes_only_a_containers_own_credentials(over_tcp):
    app, platform = over_tcp
    token = (platform.state_dir / "token").read_text().strip()
    installation, guessed_ctoken, guessed_container = app.knock.remote(token)
    assert not installation["ok"] and "Unix socket" in installation["msg"]
    assert not guessed_ctoken["ok"] and guessed_ctoken["code"] == "auth"
    assert not guessed_container["ok"] and guessed_container["code"] == "auth"


def test_the_installation_token_is_refused_over_tcp_from_outside_too(over_tcp):
    app, platform = over_tcp
    host, _, port = app.address.remote().removeprefix("tcp://").rpartition(":")
    token = (platform.state_dir / "token").read_text().strip()
    with socket.create_connection((host, int(port)), timeout=10) as s:
        body = msgpack.packb({"t": P.HELLO, "id": 0, "v": P.PROTOCOL_VERSION, "role": "client", "token": token})
        s.sendall(struct.pack("!I", len(body)) + body)
        (n,) = struct.unpack("!I", s.recv(4, socket.MSG_WAITALL))
        reply = msgpack.unpackb(s.recv(n, socket.MSG_WAITALL), raw=False)
    assert not reply["ok"] and reply["code"] == "auth"
