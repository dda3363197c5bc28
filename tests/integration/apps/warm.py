"""Warm pools of classes: min_containers per parameter set, and a slow enter hook."""

import os
import tempfile
import time

import modal

app = modal.App("warm")


def _pid() -> int:
    """This container's process as the host sees it (its own PID namespace numbers it 1)."""
    return int(os.environ.get("HOMEPORT_HOST_PID") or os.getpid())

# The file that lets `SlowWarm`'s enter hook finish. Chosen by the test process; containers read it from
# their environment (the module is imported again there).
# In a directory containers share with the host (the tests': see tests/conftest.py), since their /tmp is their own.
GATE = os.environ.get("HP_WARM_GATE") or os.path.join(
    tempfile.mkdtemp(prefix="hp-gate-", dir=os.environ.get("HOMEPORT_CONTAINER_SHARED") or None), "open")


@app.cls(min_containers=1)
class DefaultsWarm:
    """Every parameter has a default: `DefaultsWarm()` is the default instance, kept warm."""

    size: int = modal.parameter(default=3)

    @modal.enter()
    def up(self):
        self.weights = [0] * self.size  # fails if `size` were not set (the base pool had no values)

    @modal.method()
    def f(self):
        return _pid(), len(self.weights)


@app.cls(min_containers=1)
class RequiredWarm:
    """A required parameter: nothing can be warm before a caller gives its value."""

    name: str = modal.parameter()

    @modal.enter()
    def up(self):
        self.greeting = "hi " + self.name

    @modal.method()
    def f(self):
        return _pid(), self.greeting


@app.cls(min_containers=1, env={"HP_WARM_GATE": GATE})
class SlowWarm:
    """A min container whose enter hook waits for the test to open the gate."""

    @modal.enter()
    def wait_for_gate(self):
        deadline = time.monotonic() + 120
        while not os.path.exists(os.environ["HP_WARM_GATE"]) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.entered = True

    @modal.method()
    def f(self):
        return _pid(), getattr(self, "entered", False)
