"""The functions the benchmarks call (a module, so that containers can import it)."""

import asyncio
import os
import time

import homeport as modal

app = modal.App("bench")


@app.function()
def trivial(x=0):
    return x


@app.function(max_containers=10)
def one_second(x):
    time.sleep(1.0)
    return x


bench_volume = modal.Volume.from_name("bench-volume", create_if_missing=True)


@app.function(volumes={"/data": bench_volume})
def with_volume(x=0):
    return x


@app.function(scaledown_window=2)
def idle_probe():
    return os.getpid()


@app.function(max_containers=1)
@modal.concurrent(max_inputs=1000)
async def sleeper(seconds):
    await asyncio.sleep(seconds)
    return seconds


STATE_MB = int(os.environ.get("BENCH_STATE_MB", "1024"))
# The heavy classes import numpy: it is in their image, not in the runtime-only default one. The state
# size reaches their containers through `env=` (a container never sees the caller's environment).
heavy_image = modal.Image.debian_slim().pip_install("numpy")
HEAVY = {"image": heavy_image, "env": {"BENCH_STATE_MB": str(STATE_MB)}, "max_containers": 1}


def _build_state():
    import numpy as np

    # ~STATE_MB of model-like state, really written (not lazily zero pages)
    return np.random.default_rng(0).standard_normal(STATE_MB * (1 << 20) // 8)


@app.cls(enable_memory_snapshot=True, **HEAVY)
class HeavySnap:
    @modal.enter(snap=True)
    def load(self):
        self.state = _build_state()

    @modal.method()
    def size(self):
        return self.state.nbytes


@app.cls(**HEAVY)
class Heavy:
    @modal.enter()
    def load(self):
        self.state = _build_state()

    @modal.method()
    def size(self):
        return self.state.nbytes


# --- issue 7 ----------------------------------------------------------------------------------------
def hello_handler():
    return {"hello": "world"}


# One container, as many requests at once as wrk sends: the same shape as one uvicorn process.
@app.function(max_containers=1)
@modal.concurrent(max_inputs=512)
@modal.fastapi_endpoint()
def web_hello():
    return hello_handler()


async def hello_handler_async():
    return {"hello": "world"}


@app.function(max_containers=1)
@modal.concurrent(max_inputs=512)
@modal.fastapi_endpoint()
async def web_hello_async():
    return await hello_handler_async()


TICKS = os.environ.get("BENCH_TICKS_FILE", "/tmp/homeport-bench-ticks")
ticks_app = modal.App("bench-ticks")


@ticks_app.function(schedule=modal.Period(seconds=1), secrets=[modal.Secret.from_dict({"BENCH_TICKS_FILE": TICKS})])
def tick():
    with open(os.environ["BENCH_TICKS_FILE"], "a") as f:
        f.write(f"{time.time()}\n")
