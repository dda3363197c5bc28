import os
import time

import modal

app = modal.App("scaling")


def _pid() -> int:
    """This container's process as the host sees it (its own PID namespace numbers it 1)."""
    return int(os.environ.get("HOMEPORT_HOST_PID") or os.getpid())


@app.function(max_containers=3)
def slow_pid(seconds):
    time.sleep(seconds)
    return _pid()


@app.function(min_containers=2)
def warm_pid():
    return _pid()


@app.function(scaledown_window=2)
def short_lived():
    return _pid()


@app.function(max_containers=2)
def work(i):
    time.sleep(0.002)
    return i


@app.function(buffer_containers=2, max_containers=10)
def buffered(seconds):
    time.sleep(seconds)
    return _pid()
