"""A plain `python script_types.py`: classes defined in the script itself cross the wire both ways.

The container imports this file under another name than `__main__`; what it raises and returns must
still come back as this script's own classes.
"""

import modal

app = modal.App("script-types")


class BadInput(Exception):
    pass


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y


@app.function()
def check(x):
    if x < 0:
        raise BadInput(f"negative: {x}")
    return Point(x, x * 2)


if __name__ == "__main__":
    with app.run(show_logs=False):
        p = check.remote(3)
        print("returned", type(p).__name__, isinstance(p, Point), p.x, p.y)
        try:
            check.remote(-1)
        except BadInput as exc:  # the script's own class, not a look-alike
            print("caught", type(exc).__name__, str(exc), "Remote traceback" in "".join(getattr(exc, "__notes__", [])))
        outs = list(check.map([1, -2], return_exceptions=True))
        print("mapped", isinstance(outs[0], Point), isinstance(outs[1], BadInput))
