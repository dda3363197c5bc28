"""Functions that look for the control plane's state directory from inside their containers.

`STATE` is the state directory of the platform under test: the caller's `HOMEPORT_STATE_DIR` when this
module is imported by the test, passed to the containers through `env=`.
"""

import os
import sys

import modal

STATE = os.environ.get("HIDE_TEST_STATE") or os.environ["HOMEPORT_STATE_DIR"]
ENV = {"HIDE_TEST_STATE": STATE}
SECRET = modal.Secret.from_dict({"HIDE_TEST_SECRET": "its-own-secret"})

app = modal.App("hidden-state")
volume = modal.Volume.from_name("hidden-state-vol", create_if_missing=True)
rootfs_app = modal.App("hidden-state-rootfs", image=modal.Image.debian_slim().run_commands("true"))


def look() -> dict:
    """What this container can reach of the state directory: for each secret file the error (or
    "read"), and what it can list of the directories the other apps' volumes and containers live in."""
    out: dict = {}
    for name in ("token", "secret.key", "state.db", "state.db-wal", "server.log"):
        try:
            with open(os.path.join(STATE, name), "rb") as f:
                f.read(1)
            out[name] = "read"
        except OSError as exc:
            out[name] = type(exc).__name__
    for name in ("volumes", "containers"):
        try:
            out[name] = sorted(os.listdir(os.path.join(STATE, name)))
        except OSError as exc:
            out[name] = type(exc).__name__
    try:  # the image's environment, under the state directory's images/ (on the host)
        with open(os.path.join(sys.prefix, "hp-written"), "w"):
            pass
        out["image_writable"] = True
    except OSError:
        out["image_writable"] = False
    # Around the mask: through the root of a process that sees the host's view (its template, the
    # control plane, the caller ...), as /proc shows it.
    out["through_proc"] = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/root{STATE}/token") as f:
                f.read(1)
            out["through_proc"].append(pid)
        except OSError:
            pass
    out["tmpdir"] = os.environ.get("TMPDIR")
    out["tmpdir_writable"] = _writable(os.environ.get("TMPDIR"))
    out["token_in_environ"] = "HOMEPORT_CONTAINER_TOKEN" in os.environ
    out["secret"] = os.environ.get("HIDE_TEST_SECRET")
    return out


def _writable(path):
    try:
        with open(os.path.join(path, "hp-probe"), "w") as f:
            f.write("x")
        return True
    except (OSError, TypeError):
        return False


@app.function(env=ENV)
def echo(x):
    return x


@app.function(env=ENV, secrets=[SECRET])
def plain():
    return {**look(), "called": echo.remote("through the socket")}


@app.function(env=ENV, secrets=[SECRET], volumes={"/data": volume})
def with_volume(text):
    with open("/data/note.txt", "w") as f:
        f.write(text)
    volume.commit()
    with open("/data/note.txt") as f:
        back = f.read()
    return {**look(), "volume": back, "called": echo.remote("through the socket")}


@app.cls(env=ENV, secrets=[SECRET], enable_memory_snapshot=True)
class Snapshot:
    @modal.enter(snap=True)
    def before(self):
        self.at_snapshot = look()

    @modal.method()
    def seen(self):
        return {"snap": self.at_snapshot, "container": look(), "called": echo.remote("through the socket")}


@rootfs_app.function(env=ENV, secrets=[SECRET])
def in_rootfs():
    return {**look(), "debian": os.path.exists("/etc/debian_version")}
