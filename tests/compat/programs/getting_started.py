"""Modal's "Hello, world": a function, .remote, .map, .starmap, .for_each, .local."""

import modal

app = modal.App("compat-getting-started")


@app.function()
def square(x: int) -> int:
    print("This code is running on a remote worker!")
    return x**2


@app.function()
def add(a: int, b: int) -> int:
    return a + b


@app.local_entrypoint()
def main():
    assert square.remote(42) == 1764
    assert list(square.map(range(5))) == [0, 1, 4, 9, 16]
    assert list(add.starmap([(1, 2), (3, 4)])) == [3, 7]
    assert square.local(3) == 9
    add.for_each([1, 2], [3, 4])
    assert modal.is_local()
    print("COMPAT OK getting_started")


if __name__ == "__main__":
    with app.run():
        main()
