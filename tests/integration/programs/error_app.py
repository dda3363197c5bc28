"""A function that raises: the CLI shows the user's traceback once, without Homeport's frames."""

import modal

app = modal.App("error-app")


def check(x):
    raise ValueError(f"bad value {x}")  # the line the user must see, once


@app.function()
def f(x: int):
    return check(x)


@app.local_entrypoint()
def main():
    f.remote(3)
