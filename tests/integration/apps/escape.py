"""User code that attacks the installation from inside its container, for the escape tests.

It plants links in its volume pointing at the control plane's state (token, secrets' key, database),
at another volume and at the host's root, then leaves it to the control plane's volume operations to
follow them. Containers forked from one snapshot template spawn calls and draw random numbers.
"""

import os
import random
import time

import modal

app = modal.App("escape")
vol = modal.Volume.from_name("escape-a", create_if_missing=True)
other_vol = modal.Volume.from_name("escape-b", create_if_missing=True)

LINKS = {
    "token": "../../token",
    "key": "../../secret.key",
    "db": "../../state.db",
    "other": "../escape-b",
    "up": "../..",
    "root": "/",
    "etc": "/etc/passwd",
}


@app.function(volumes={"/vol": vol, "/other": other_vol})
def plant(state_dir: str) -> list[str]:
    os.makedirs("/vol/dir", exist_ok=True)
    with open("/vol/ok.txt", "w") as f:
        f.write("fine")
    with open("/other/private.txt", "w") as f:
        f.write("other volume's data")
    made = []
    for name, target in {**LINKS, "abs-token": os.path.join(state_dir, "token"),
                         "abs-state": state_dir}.items():
        for where in ("/vol", "/vol/dir"):
            path = os.path.join(where, name)
            if os.path.lexists(path):
                os.unlink(path)
            os.symlink(target, path)
            made.append(path)
    if not os.path.exists("/vol/fifo"):
        os.mkfifo("/vol/fifo")
    return made


@app.function()
def target(i: int) -> int:
    return i * 2


@app.cls(enable_memory_snapshot=True, min_containers=2, max_containers=2)
class Forked:
    @modal.enter(snap=True)
    def load(self):
        self.loaded_in = int(os.environ.get("HOMEPORT_HOST_PID") or os.getpid())  # the template's: containers
        # are its copies (each in a PID namespace of its own, where it is process 1: the host's pid tells them apart)

    @modal.method()
    def spawn_one(self, delay: float) -> dict:
        time.sleep(delay)
        call = target.spawn(21)
        return {"pid": int(os.environ.get("HOMEPORT_HOST_PID") or os.getpid()), "loaded_in": self.loaded_in, "call_id": call.object_id, "random": random.random(),
                "result": call.get(timeout=60)}


@app.function()
def size(data: bytes) -> int:
    return len(data)


@app.function(name="twin")
def twin_a() -> str:
    return "a"


@app.function(name="twin")  # the same name: Modal warns and the later one wins
def twin_b() -> str:
    return "b"


@app.function()
def malformed_sandbox_ops(ops: list[dict]) -> list[dict]:
    """Send sandbox operations as they are, on a connection of its own with its container's credentials;
    the control plane's answers."""
    import socket
    import struct

    from homeport import _context
    from homeport import _protocol as P

    cid, ctoken, _app_id = _context.container
    address = os.environ[P.ENV_SERVER_ADDRESS]
    if address.startswith("tcp://"):
        host, port = address[len("tcp://"):].rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=60)
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(60)
        sock.connect(address)

    def read(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("the control plane closed the connection")
            buf += chunk
        return buf

    def request(msg: dict, rid: int) -> dict:
        sock.sendall(P.encode({**msg, "id": rid}))
        while True:
            (n,) = struct.unpack(">I", read(4))
            reply = P.decode(read(n))
            if reply.get("t") == P.RESULT and reply.get("id") == rid:
                return reply

    with sock:
        assert request({"t": P.HELLO, "role": "client", "cid": cid, "ctoken": ctoken, "v": P.PROTOCOL_VERSION}, 0)["ok"]
        return [request(op, i) for i, op in enumerate(ops, 1)]
