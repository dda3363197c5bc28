"""A first Homeport program: `homeport run examples/hello.py` (or `--n 20`)."""

import modal

app = modal.App("hello")


@app.function()
def square(x: int) -> int:
    print(f"squaring {x} in a container")
    return x * x


@app.local_entrypoint()
def main(n: int = 10):
    print("square(7) =", square.remote(7))
    print(f"sum of squares below {n} =", sum(square.map(range(n))))
