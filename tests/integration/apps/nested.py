"""An app whose container code uses the apps of its own module (issue 20: a container builds what an
app publishes only if its code asks for it)."""

import modal

app = modal.App("nested")
inner = modal.App("nested-inner")


def helper(x):
    return x + 1000


@inner.function()
def inner_square(x):
    return helper(x * x)


@inner.cls()
class InnerCounter:
    start: int = modal.parameter(default=5)

    @modal.method()
    def add(self, x):
        return self.start + x


@app.function()
def inner_app_here(x):
    """What a container sees of the module's other app: every function and class, runnable locally."""
    return [sorted(inner.registered_functions), inner.name, inner_square.local(x),
            InnerCounter(start=7).add.local(x), modal.is_local()]


@app.function()
def run_inner(x):
    """Tries to run `inner` from inside this container, as a client would: refused, as before."""
    try:
        with inner.run(show_logs=False):
            return inner_square.remote(x)
    except modal.exception.AuthError as exc:
        return f"refused: {exc}"
