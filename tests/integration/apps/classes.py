"""Classes for the classes tests: methods, lifecycle hooks, parameters, options."""

import os
import time

import modal

app = modal.App("classes")


def _pid() -> int:
    """This container's process as the host sees it (its own PID namespace numbers it 1)."""
    return int(os.environ.get("HOMEPORT_HOST_PID") or os.getpid())


def _append(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


@app.cls()
class Counter:
    @modal.enter()
    def setup(self):
        self.count = 0
        self.enter_pid = _pid()

    @modal.method()
    def incr(self, by=1):
        self.count += by
        return self.count

    @modal.method()
    def where(self):
        return _pid(), self.enter_pid

    @modal.method()
    def gen(self, n):
        for i in range(n):
            yield i * self.count

    @modal.method()
    async def async_echo(self, x):
        return ("async", x)

    @modal.method()
    def square(self, x):
        return x * x

    def helper(self):  # not a method: not callable remotely
        return "local only"


@app.cls(enable_memory_snapshot=True)
class Ordered:
    """Enter hooks in definition order, the snap=True ones first; a plain `__init__` runs before them."""

    def __init__(self):
        self.order = ["__init__"]

    @modal.enter()
    def post_one(self):
        self.order.append("post_one")

    @modal.enter(snap=True)
    def snap_one(self):
        self.order.append("snap_one")

    @modal.enter()
    def post_two(self):
        self.order.append("post_two")

    @modal.enter(snap=True)
    def snap_two(self):
        self.order.append("snap_two")

    @modal.method()
    def order_seen(self):
        return self.order


@app.cls(max_containers=2)
class Tracked:
    """Each enter appends its pid to `log`: one line per container."""

    log: str = modal.parameter()

    @modal.enter()
    def record(self):
        time.sleep(0.1)  # a slow-ish start, so inputs queue up while containers start
        _append(self.log, str(_pid()))
        self.ready = True

    @modal.method()
    def work(self, x):
        if not getattr(self, "ready", False):
            raise RuntimeError("an input ran before the enter hook finished")
        time.sleep(0.05)
        return _pid()


@app.cls(scaledown_window=2)
class Exits:
    """Exit hooks write to `log`; the first one fails, the second must still run."""

    log: str = modal.parameter()

    @modal.enter()
    def start(self):
        _append(self.log, f"enter {_pid()}")

    @modal.exit()
    def broken(self):
        _append(self.log, f"exit-broken {_pid()}")
        raise RuntimeError("exit hook failed on purpose")

    @modal.exit()
    def cleanup(self):
        _append(self.log, f"exit-cleanup {_pid()}")

    @modal.method()
    def pid(self):
        return _pid()


@app.cls()
class Params:
    name: str = modal.parameter()
    n: int = modal.parameter(default=3)
    flag: bool = modal.parameter(default=False)
    blob: bytes = modal.parameter(default=b"\x00raw")

    @modal.enter()
    def setup(self):
        self.greeting = f"{self.name}:{self.n}"

    @modal.method()
    def values(self):
        return {"name": self.name, "n": self.n, "flag": self.flag, "blob": self.blob,
                "greeting": self.greeting, "pid": _pid()}


@app.cls(timeout=30)
class Options:
    @modal.method()
    def sleep(self, seconds):
        time.sleep(seconds)
        return seconds

    @modal.method()
    def env(self, name):
        return os.environ.get(name)

    @modal.method()
    def pid(self):
        return _pid()

    @modal.method()
    def memory_limit_mib(self):
        """The memory limit the kernel enforces on this container (cgroup v1 or v2), in MiB."""
        for line in open("/proc/self/cgroup").read().splitlines():
            _, ctrls, path = line.split(":", 2)
            for name in (f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes", f"/sys/fs/cgroup{path}/memory.max"):
                if ("memory" in ctrls.split(",") or ctrls == "") and os.path.exists(name):
                    value = open(name).read().strip()
                    return None if value == "max" else int(value) >> 20
        return None

    @modal.method()
    def write_then_read(self, path, text):
        with open(path, "w") as f:
            f.write(text)
        return open(path).read()

    @modal.method()
    def fails_until(self, counter, fail_times):
        n = int(open(counter).read()) if os.path.exists(counter) else 0
        with open(counter, "w") as f:
            f.write(str(n + 1))
        if n < fail_times:
            raise RuntimeError(f"attempt {n + 1} fails")
        return n + 1


@app.cls(scaledown_window=2)
class SlowExit:
    """An exit hook longer than the control plane's grace period: it is cut short, and the user told."""

    log: str = modal.parameter()

    @modal.exit()
    def flush(self):
        _append(self.log, "exit-start")
        time.sleep(60)
        _append(self.log, "exit-end")

    @modal.method()
    def pid(self):
        return _pid()


@app.cls(startup_timeout=1)
class SlowStart:
    @modal.enter()
    def load(self):
        time.sleep(30)

    @modal.method()
    def f(self):
        return "never"


@app.cls()
class BrokenEnter:
    @modal.enter()
    def connect(self):
        raise ConnectionRefusedError("database is down")

    @modal.method()
    def f(self):
        return "never"


_ENTERS = 0


@app.function()
class Worker:
    """The function-level class form: enter once per container, `__call__` per input."""

    @modal.enter()
    def setup(self):
        global _ENTERS
        _ENTERS += 1
        self.state = {"processed": 0}

    @modal.exit()
    def teardown(self):
        print(f"Worker stopping. Processed {self.state['processed']} items")

    def __call__(self, item):
        self.state["processed"] += 1
        return item * 2, self.state["processed"], _ENTERS, _pid()


class BaseService:
    """Hooks and methods inherited by an `@app.cls` subclass (the base itself is not registered)."""

    @modal.enter()
    def base_setup(self):
        self.seen = ["base_setup"]

    @modal.method()
    def inherited(self):
        return self.seen

    @modal.method()
    def overridden(self):
        return "base"


@app.cls()
class Derived(BaseService):
    @modal.enter()
    def derived_setup(self):
        self.seen.append("derived_setup")

    @modal.method()
    def overridden(self):
        return "derived"


@app.cls(retries=modal.Retries(max_retries=2, initial_delay=0.0, backoff_coefficient=1.0))
class Flaky:
    """Retries apply to methods; a generator method is never retried (its items were already sent)."""

    @modal.method()
    def unary(self, counter, fail_times):
        n = int(open(counter).read()) if os.path.exists(counter) else 0
        with open(counter, "w") as f:
            f.write(str(n + 1))
        if n < fail_times:
            raise RuntimeError(f"attempt {n + 1} fails")
        return n + 1

    @modal.method()
    def gen(self, counter):
        _append(counter, "started")
        yield "item"
        raise RuntimeError("generator fails after one item")
