import asyncio
import os
import sys
import time

import modal

app = modal.App("basic")


def _pid() -> int:
    """This container's process as the host sees it (its own PID namespace numbers it 1)."""
    return int(os.environ.get("HOMEPORT_HOST_PID") or os.getpid())


@app.function()
def square(x):
    return x * x


@app.function()
def pid():
    return _pid()


@app.function()
def add(a, b=0):
    return a + b


@app.function()
def fail(x=0):
    if x == 3:
        raise KeyError("three")
    raise ValueError(f"bad input {x}")


@app.function()
def maybe_fail(x):
    if x % 3 == 0:
        raise ValueError(f"multiple of three: {x}")
    return x


@app.function()
def gen(n):
    for i in range(n):
        yield i * 10


@app.function()
def gated_gen(gate):
    """Yields one item, then waits until the caller has seen it: proves items stream as yielded."""
    yield "first"
    deadline = time.monotonic() + 20
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError("the caller never saw the first item")
        time.sleep(0.01)
    yield "second"


@app.function()
async def async_double(x):
    await asyncio.sleep(0.01)
    return 2 * x


@app.function()
async def async_gen(n):
    for i in range(n):
        await asyncio.sleep(0)
        yield i


@app.function()
def slow(seconds):
    time.sleep(seconds)
    return seconds


@app.function()
def talk(message):
    print(f"stdout says {message}")
    print(f"stderr says {message}", file=sys.stderr)
    return message


@app.function()
def returns_lock():
    import threading

    return threading.Lock()


@app.function()
def env_var(name):
    return os.environ.get(name)


@app.function(retries=modal.Retries(max_retries=3, initial_delay=0.0, backoff_coefficient=1.0))
def flaky(counter_file, fail_times):
    n = int(open(counter_file).read()) if os.path.exists(counter_file) else 0
    with open(counter_file, "w") as f:
        f.write(str(n + 1))
    if n < fail_times:
        raise RuntimeError(f"attempt {n + 1} fails")
    return n + 1


@app.function(retries=modal.Retries(max_retries=3, initial_delay=0.2, backoff_coefficient=2.0))
def backs_off(attempts_file):
    """Fails three times, then succeeds; each attempt appends when it started."""
    with open(attempts_file, "a") as f:
        f.write(f"{time.time()}\n")
    n = len(open(attempts_file).read().splitlines())
    if n <= 3:
        raise RuntimeError(f"attempt {n} fails")
    return n


@app.function(max_containers=1)
def wait_for_gate(x, gate=None):
    """Returns at once, or (with `gate`) once the file exists."""
    while gate and not os.path.exists(gate):
        time.sleep(0.01)
    return x


@app.function(timeout=1)
def too_slow():
    time.sleep(30)
    return "never"


@app.function(secrets=[modal.Secret.from_dict({"HP_SECRET": "s3cr3t"})])
def read_secret():
    return os.environ.get("HP_SECRET")


@app.function()
def is_remote():
    return modal.is_local(), os.environ.get("MODAL_IS_REMOTE")


@app.function()
def ids(_=None):
    return modal.current_input_id(), modal.current_function_call_id()


@app.function()
def fan_out(n):
    """Calls other functions of its app from inside its container."""
    return square.remote(n), list(square.map(range(n))), pid.remote() != _pid()


@app.cls()
class Doubler:
    factor: int = modal.parameter(default=2)

    @modal.method()
    def double(self, x):
        return self.factor * x


@app.function()
def uses_class(x):
    return Doubler().double.remote(x), Doubler(factor=3).double.remote(x)


@app.function(max_containers=1, timeout=60)
@modal.concurrent(max_inputs=4)
def after_seen(value, seen_dir):
    """Returns once the caller has seen the output for `value - 1`, so outputs complete in value order
    whatever order the inputs came in (0 returns at once)."""
    if value > 0:
        marker = os.path.join(seen_dir, str(value - 1))
        deadline = time.monotonic() + 50
        while not os.path.exists(marker):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the caller never saw the output for {value - 1}")
            time.sleep(0.01)
    return value


@app.function()
def mark(x, directory, fail_on=-1):
    open(os.path.join(directory, str(x)), "w").close()
    if x == fail_on:
        raise ValueError(f"failing on {x}")
    return x


@app.function(retries=modal.Retries(max_retries=1, initial_delay=0.0, backoff_coefficient=1.0))
def killed_once(marker):
    """The first attempt leaves its pid in `marker` and waits to be killed; a retry returns its own pid."""
    if not os.path.exists(marker):
        with open(marker + ".tmp", "w") as f:
            f.write(str(_pid()))
        os.rename(marker + ".tmp", marker)
        time.sleep(60)
        return -1
    return _pid()
