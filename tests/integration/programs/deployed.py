import os
import time

import modal

app = modal.App(os.environ.get("DEPLOY_NAME", "deployed"))


def _pid() -> int:
    """This container's process as the host sees it (its own PID namespace numbers it 1)."""
    return int(os.environ.get("HOMEPORT_HOST_PID") or os.getpid())
VERSION = os.environ.get("DEPLOY_VERSION", "1")
TICKS = os.environ.get("TICK_LOG", "/dev/null")
PERIOD = modal.Period(seconds=float(os.environ.get("TICK_SECONDS", "3600")))


@app.function(env={"DEPLOY_VERSION": VERSION})
def square(x: int) -> int:
    return x * x


@app.function(env={"DEPLOY_VERSION": VERSION})
def version() -> str:
    return os.environ["DEPLOY_VERSION"]


@app.function()
def slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.function()
def count(n: int):
    yield from range(n)


@app.function(schedule=PERIOD, env={"TICK_LOG": TICKS})
def tick():
    with open(os.environ["TICK_LOG"], "a") as f:
        f.write(f"{time.time()}\n")


@app.cls(max_containers=1)
class Greeter:
    greeting: str = modal.parameter(default="hello")

    @modal.method()
    def greet(self, name: str) -> str:
        return f"{self.greeting} {name}"

    @modal.method()
    def where(self) -> tuple:
        """Which container and thread served the call, and an environment variable."""
        import threading

        return _pid(), threading.current_thread().name, os.environ.get("HP_VARIANT")

    @modal.method()
    def sleep(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds
