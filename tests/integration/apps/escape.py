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
