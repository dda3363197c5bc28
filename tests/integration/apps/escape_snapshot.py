"""Containers forked from one memory snapshot: each is a host user of its own, and the snap hooks
(user code run in the snapshot's template, before any container) cannot touch the web sockets'
directory, where every web container's socket lies. Each attempt is reported as data; the test
(`test_escape_snapshot.py`) says what must have failed.
"""

import os
import socket
import time

import modal

app = modal.App("escape-snapshot")


def _attempt(action, *args) -> str:
    try:
        action(*args)
        return "done"
    except OSError as exc:
        return type(exc).__name__


def _bind(path: str) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(path)
    finally:
        s.close()


def _attacks() -> dict:
    """Every way for code in the template to put something where the gateway looks for a socket."""
    shared = os.path.join(os.path.dirname(os.environ["HOMEPORT_SERVER_ADDRESS"]), "web")
    out: dict = {"dir": shared, "exists": os.path.isdir(shared)}
    try:
        out["entries"] = sorted(os.listdir(shared))
    except OSError as exc:
        out["entries"] = []
        out["list"] = type(exc).__name__
    out["plant"] = _attempt(lambda: open(os.path.join(shared, "hp-planted"), "w").close())
    out["mkdir"] = _attempt(os.mkdir, os.path.join(shared, "ta-000000000000"))
    out["bind"] = _attempt(_bind, os.path.join(shared, "hp-sock"))
    out["others"] = {}
    for entry in out["entries"]:
        path = os.path.join(shared, entry)
        tried = {"plant_inside": _attempt(lambda p=path: open(os.path.join(p, "w-00"), "w").close()),
                 "bind_inside": _attempt(_bind, os.path.join(path, "w-09")),
                 "rename": _attempt(os.rename, path, path + "-moved"),
                 "rmdir": _attempt(os.rmdir, path)}
        try:
            names = os.listdir(path)
        except OSError:
            names = []  # a directory it cannot read lists nothing: that is fine
        for name in names:
            tried[name] = _attempt(os.unlink, os.path.join(path, name))
        out["others"][entry] = tried
    return out


def _uid_map() -> list[str]:
    with open("/proc/self/uid_map") as f:
        return f.read().split()


@app.function()
@modal.fastapi_endpoint()
def victim():
    return "victim"


# (No volume: a template with mounts starts under bubblewrap, where it cannot isolate itself yet.)
@app.cls(enable_memory_snapshot=True)
class Snapped:
    @modal.enter(snap=True)
    def attack(self):
        self.snap = _attacks()

    @modal.method()
    def whoami(self, seconds: float) -> dict:
        """Its host user (root inside is host user `uid_map[1]`), held `seconds` so that two run at once;
        it still writes its temporary directory and /tmp."""
        cid = os.environ["HOMEPORT_CONTAINER_ID"]
        for where in (os.environ["TMPDIR"], "/tmp"):
            with open(os.path.join(where, "note"), "w") as f:
                f.write(cid)
        time.sleep(seconds)
        return {"cid": cid, "uid_map": _uid_map(), "tmp": open(os.path.join(os.environ["TMPDIR"], "note")).read()}

    @modal.method()
    def snap_attacks(self) -> dict:
        return self.snap


@app.cls(enable_memory_snapshot=True)
class SnapWeb:
    """A web endpoint of a memory snapshot: its containers still serve through the gateway."""

    @modal.enter(snap=True)
    def attack(self):
        self.snap = _attacks()

    @modal.fastapi_endpoint()
    def hello(self):
        return {"uid_map": _uid_map(), "snap": self.snap}
