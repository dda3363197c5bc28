"""A web container that tries to take over another container's web endpoint: its socket lies in a
directory the control plane shares with every web container. Each attempt is reported as data; the
test (`test_escape.py`) says what must have failed.
"""

import json
import os
import subprocess
import sys
import tempfile

import modal

app = modal.App("escape-web")


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


@app.function()
@modal.fastapi_endpoint()
def victim():
    return "victim"


# Its own HTTP server (a `web_server`: spawned under bubblewrap with a network of its own), which
# serves what its attacks achieved, made when it started.
@app.function()
@modal.web_server(8000, startup_timeout=30)
def attacker():
    where = tempfile.mkdtemp()
    with open(os.path.join(where, "results.json"), "w") as f:
        json.dump(_attacks(), f)
    subprocess.Popen([sys.executable, "-m", "http.server", "8000", "--directory", where],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
