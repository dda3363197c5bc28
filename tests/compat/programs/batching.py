"""Dynamic batching: @modal.batched on a function and on a class method."""

import modal

app = modal.App("compat-batching")


@app.function()
@modal.batched(max_batch_size=4, wait_ms=200)
def double(xs: list[int]) -> list[int]:
    return [2 * x for x in xs]


@app.cls()
class Model:
    @modal.batched(max_batch_size=4, wait_ms=200)
    def predict(self, xs: list[int]) -> list[int]:
        return [x + len(xs) * 0 + 1 for x in xs]


@app.local_entrypoint()
def main():
    assert list(double.map(range(8))) == [2 * x for x in range(8)]
    assert double.remote(5) == 10
    assert list(Model().predict.map(range(3))) == [1, 2, 3]
    print("COMPAT OK batching")


if __name__ == "__main__":
    with app.run():
        main()
