"""Containers that say who they are: their host process, their cgroups, their user, their container id."""

import os
import time

import modal

app = modal.App("spares")


def _who() -> dict:
    cgroups = {}
    for line in open("/proc/self/cgroup").read().splitlines():
        _, ctrls, path = line.split(":", 2)
        cgroups[ctrls or "unified"] = path
    return {"cid": os.environ.get("HOMEPORT_CONTAINER_ID"),
            "pid": int(os.environ.get("HOMEPORT_HOST_PID") or os.getpid()),
            "cgroups": cgroups, "uid_map": open("/proc/self/uid_map").read().split(), "pgid": os.getpgid(0)}


@app.function()
def who(_x=None):
    return _who()


@app.function(max_containers=6)
def slow_who(seconds):
    time.sleep(seconds)  # long enough that a map of many scales out to several containers
    return _who()


@app.function(memory=(32, 300))
def limited_who():
    return _who()


@app.cls(enable_memory_snapshot=True)
class Snap:
    @modal.enter(snap=True)
    def load(self):
        self.state = bytearray(8 << 20)

    @modal.method()
    def who(self):
        return {**_who(), "state": len(self.state)}
