import os
import time

import modal

app = modal.App("resources")


def _pid() -> int:
    """This container's process as the host sees it (its own PID namespace numbers it 1)."""
    return int(os.environ.get("HOMEPORT_HOST_PID") or os.getpid())
CORES = os.cpu_count() or 1  # what psutil.cpu_count() says; psutil is not in the default image


@app.function(memory=(64, 200))
def hog(mib):
    block = bytearray(mib << 20)
    for i in range(0, len(block), 4096):  # touch every page so the memory is really used
        block[i] = 1
    return len(block)


def _cgroup_file(controller: str, name: str) -> str | None:
    for line in open("/proc/self/cgroup").read().splitlines():
        _, ctrls, path = line.split(":", 2)
        if controller in ctrls.split(","):
            for root in (f"/sys/fs/cgroup/{ctrls}", f"/sys/fs/cgroup/{controller}"):
                p = f"{root}{path}/{name}"
                if os.path.exists(p):
                    return open(p).read().strip()
        if ctrls == "" and os.path.exists(f"/sys/fs/cgroup{path}/cpu.max"):
            return open(f"/sys/fs/cgroup{path}/cpu.max").read().strip()
    return None


@app.function(cpu=(0.25, 0.5))
def cpu_quota():
    return _cgroup_file("cpu", "cpu.cfs_quota_us"), _cgroup_file("cpu", "cpu.cfs_period_us")


@app.function(cpu=CORES * 0.6)
def big(seconds):
    time.sleep(seconds)
    return _pid()


@app.function(cpu=CORES * 100.0)
def impossible():
    return 1
