"""A cold `.map` of many short inputs: it scales out, and the extra containers are not needed by the
time they would be ready. Containers import slowly (0.5 s) so that most are still starting then."""

import time

import modal

app = modal.App("cold-map")

if modal.is_local() is False:
    time.sleep(0.5)


@app.function()
def square(x: int) -> int:
    return x * x


@app.local_entrypoint()
def main(n: int = 1000):
    print("total", sum(square.map(range(n))))
