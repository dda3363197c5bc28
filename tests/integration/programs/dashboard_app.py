"""What the dashboard test watches: a call that prints a marked line, one that fails, and a map."""

import modal

app = modal.App("dash-watch")


@app.function()
def greet(marker: str) -> str:
    print(f"greeting {marker}")
    return marker.upper()


def check_inventory(count: int) -> None:
    raise ValueError(f"inventory is short by {count} crates")


@app.function()
def restock(count: int) -> None:
    check_inventory(count)


@app.function()
def square(x: int) -> int:
    return x * x


@app.local_entrypoint()
def main(marker: str):
    print("greeted", greet.remote(marker))
    print("squares", sum(square.map(range(20))))
    try:
        restock.remote(17)
    except ValueError as exc:
        print("restock failed:", exc)
