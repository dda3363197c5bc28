import asyncio
import os
import threading
import time

import modal

app = modal.App("concurrency")


def _pid() -> int:
    """This container's process as the host sees it (its own PID namespace numbers it 1)."""
    return int(os.environ.get("HOMEPORT_HOST_PID") or os.getpid())


_running = 0  # inputs of async_sleep in this container now
_peak = 0  # and the most at once so far


@app.function(max_containers=1)
@modal.concurrent(max_inputs=20)
async def async_sleep(seconds):
    """This container and the most inputs it has run at once, this one included."""
    global _running, _peak
    _running += 1
    _peak = max(_peak, _running)
    try:
        await asyncio.sleep(seconds)
    finally:
        _running -= 1
    return _pid(), _peak


@app.function(max_containers=1)
@modal.concurrent(max_inputs=8)
def sync_sleep(seconds):
    time.sleep(seconds)
    return _pid(), threading.current_thread().name


@app.function(max_containers=1, timeout=1)
@modal.concurrent(max_inputs=4)
def sync_maybe_hang(seconds):
    time.sleep(seconds)
    return _pid()


@app.function(max_containers=1, timeout=1)
@modal.concurrent(max_inputs=4)
async def async_maybe_hang(seconds):
    await asyncio.sleep(seconds)
    return _pid()


@app.function(max_containers=1)
@modal.concurrent(max_inputs=4)
async def async_gen(n):
    for i in range(n):
        await asyncio.sleep(0)
        yield i


@app.function()
@modal.batched(max_batch_size=8, wait_ms=200)
def batch_add(xs, ys):
    return [("batch", len(xs), x + y) for x, y in zip(xs, ys)]


@app.function()
@modal.batched(max_batch_size=4, wait_ms=10)
def batch_wrong_length(xs):
    return xs[:-1]


@app.cls(max_containers=1)
@modal.concurrent(max_inputs=10)
class Counter:
    @modal.enter()
    def start(self):
        self.enters = getattr(self, "enters", 0) + 1

    @modal.method()
    async def wait(self, seconds):
        await asyncio.sleep(seconds)
        return _pid(), self.enters


@app.cls()
class Embedder:
    @modal.batched(max_batch_size=5, wait_ms=300)
    def embed(self, texts):
        return [f"{t}:{len(texts)}" for t in texts]
