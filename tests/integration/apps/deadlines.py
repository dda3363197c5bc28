"""Timeouts the container cannot enforce itself: the control plane's deadline is the backstop."""

import os
import signal
import time

import modal

app = modal.App("deadlines")


def _pid() -> int:
    """This container's process as the host sees it (its own PID namespace numbers it 1)."""
    return int(os.environ.get("HOMEPORT_HOST_PID") or os.getpid())


def _swallow_for(seconds):
    """User code that catches BaseException: the container's own timeout never gets through."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            time.sleep(max(0.0, end - time.monotonic()))
        except BaseException:
            pass


@app.function(timeout=2, max_containers=1)
def swallow(seconds):
    _swallow_for(seconds)
    return _pid()


@app.function(timeout=2)
def blocked(seconds):
    # As if stuck in one long call into C: the timer's signal never reaches Python code.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(seconds)
    return _pid()


@app.function(timeout=1, max_containers=1)
def cooperative(seconds):
    time.sleep(seconds)  # interruptible: the container times it out itself
    return _pid()


@app.cls(startup_timeout=2)
class StuckStart:
    @modal.enter()
    def load(self):
        _swallow_for(120)

    @modal.method()
    def f(self):
        return "never"
