"""Functions whose user code misuses its container's credentials, for the access tests."""

import gc
import os
import pickle
import time

import modal

from homeport import _context
from homeport import _protocol as P

app = modal.App("trust")
other = modal.App("trust-other")  # another ephemeral app, not deployed


@app.function()
def credentials():
    return _context.container  # (container id, container token, app id): what user code can read


@app.function()
def echo(x):
    return x


def _wait(gate):
    deadline = time.monotonic() + 60
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError("the test never opened the gate")
        time.sleep(0.01)


@app.function()
def victim(gate):
    _wait(gate)
    return "real"


@app.function()
def victim_gen(gate):
    yield "first"
    _wait(gate)
    yield "second"


@app.function()
def forge(window):
    """Over its runtime's own connection, answers for the `window` input ids before its own."""
    own = int(modal.current_input_id().removeprefix("in-"))
    conn = next(o for o in gc.get_objects()
                if type(o).__name__ == "Connection" and type(o).__module__ == "homeport.runtime._conn")
    data = pickle.dumps("forged")
    ids = range(max(1, own - window), own)
    conn.send({"t": P.CONTAINER_OUTPUTS, "items": [[i, P.SUCCESS, data, 0.0] for i in ids]})
    for i in ids:
        conn.send({"t": P.CONTAINER_GEN, "input": i, "items": [data]})
    return own


@other.function()
def other_fn(x):
    return x
