"""The fault suite's program (`homeport run faults.py --which ...`): a map whose containers the test
kills from outside, and a deployed app whose spawned calls outlive a control plane killed with -9.

It prints one JSON line with what came back, so the test (and bench/faults.py) can count inputs lost,
duplicated and failed."""

import json
import os
import time

import modal

app = modal.App(os.environ.get("FAULTS_APP", "faults"))


@app.function(retries=3, max_containers=3)
def square(i: int) -> int:
    time.sleep(0.001)
    return i * i


@app.cls(max_containers=3)
class SlowStart:
    @modal.enter()
    def load(self):
        time.sleep(3)  # the test kills a container while it is here

    @modal.method()
    def double(self, i: int) -> int:
        time.sleep(0.001)
        return 2 * i


@app.function()
def slow_square(i: int, seconds: float) -> int:
    time.sleep(seconds)
    return i * i


@app.cls()
class Scaled:
    factor: int = modal.parameter(default=1)

    @modal.method()
    def times(self, i: int, seconds: float) -> int:
        time.sleep(seconds)
        return i * self.factor


def _count(results: list, expected: list) -> dict:
    errors = [r for r in results if isinstance(r, BaseException)]
    ok = [r for r in results if not isinstance(r, BaseException)]
    return {"inputs": len(expected), "outputs": len(results), "failed": len(errors),
            "lost": len(set(expected) - set(ok)), "duplicated": len(ok) - len(set(ok)),
            "errors": sorted({repr(e)[:300] for e in errors})[:5]}


@app.local_entrypoint()
def main(which: str = "map", n: int = 10000, seconds: float = 0.0):
    t = time.monotonic()
    if which == "slow":  # one call that outlives a SIGSTOP of the control plane
        print("FAULTS " + json.dumps({"result": slow_square.remote(n, seconds)}), flush=True)
        return
    if which == "map":
        results = list(square.map(range(n), return_exceptions=True, order_outputs=False))
        out = _count(results, [i * i for i in range(n)])
    else:  # "startup"
        results = list(SlowStart().double.map(range(n), return_exceptions=True, order_outputs=False))
        out = _count(results, [2 * i for i in range(n)])
    out["seconds"] = time.monotonic() - t
    print("FAULTS " + json.dumps(out), flush=True)
