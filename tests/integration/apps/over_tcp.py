"""An app whose containers reach the control plane over TCP (the control plane runs with HOMEPORT_LISTEN)."""

import os
import socket
import struct

import modal
import msgpack

app = modal.App("over-tcp")


@app.function()
def address() -> str:
    return os.environ["HOMEPORT_SERVER_ADDRESS"]


@app.function()
def square(x: int) -> int:
    return x * x


@app.function()
def calls_another(x: int) -> tuple[int, list[int]]:
    """`.remote()` (the blocking channel) and `.map()` (the event-loop client), both over TCP."""
    return square.remote(x), list(square.map(range(x)))


def _hello(message: dict) -> dict:
    host, _, port = os.environ["HOMEPORT_SERVER_ADDRESS"].removeprefix("tcp://").rpartition(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        body = msgpack.packb({"t": "hello", "id": 0, "v": 1, **message}, use_bin_type=True)
        s.sendall(struct.pack("!I", len(body)) + body)
        head = s.recv(4, socket.MSG_WAITALL)
        (n,) = struct.unpack("!I", head)
        return msgpack.unpackb(s.recv(n, socket.MSG_WAITALL), raw=False)


@app.function()
def knock(token: str) -> list[dict]:
    """Hostile code: what the TCP port answers to an installation token, a guessed container token and
    another container's id."""
    cid = os.environ.get("HOMEPORT_CONTAINER_ID", "")
    return [
        _hello({"role": "client", "token": token}),
        _hello({"role": "client", "cid": cid, "ctoken": "guessed"}),
        _hello({"role": "container", "cid": cid, "token": "guessed"}),
    ]
