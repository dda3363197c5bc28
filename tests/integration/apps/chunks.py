"""Maps of short inputs, which travel and are scheduled in chunks: each input must still be retried, timed
out, cancelled and reported on its own."""

import os
import signal
import time

import modal

app = modal.App("chunks")
notes = modal.Dict.from_name("chunks-notes", create_if_missing=True)


@app.function()
def ident(x):
    return x


@app.function()
def input_id(x):
    return modal.current_input_id()


def _fail_first_attempt(x, every, prefix):
    """Inputs `x % every == 3` fail their first attempt (their attempts counted in `notes`, `<prefix>-<x>`)."""
    if x % every == 3:
        key = f"{prefix}-{x}"
        n = notes.get(key, 0)
        notes[key] = n + 1
        if n == 0:
            raise ValueError(f"first attempt of {x}")
    return x


@app.function(retries=modal.Retries(max_retries=2, initial_delay=0.0, backoff_coefficient=1.0))
def fails_once(x, every):
    """Inputs `x % every == 3` fail their first attempt (their attempts counted in `notes`)."""
    return _fail_first_attempt(x, every, "attempts")


@app.function()
def raises(x, every):
    if x % every == 5:
        raise KeyError(x)
    return x


@app.function(timeout=2)
def one_hangs(x, which):
    if x == which:
        time.sleep(30)
    return x


@app.function()
def one_crashes(x, which, key):
    """Input `which` kills its container the first time it runs."""
    if x == which and not notes.get(key, False):
        notes[key] = True
        os.kill(os.getpid(), signal.SIGKILL)
    return x


@app.function(timeout=1, max_containers=1)
def slow_but_in_time(x):
    """Negative inputs return at once (so the map's chunks are cut for short inputs); the others take 0.3 s,
    inside the 1 s timeout each, though a chunk of them takes longer than that."""
    if x >= 0:
        time.sleep(0.3)
    return x


@app.function()
def slow_pid(x):
    """Slow inputs of a function nothing is known of yet (its first map)."""
    time.sleep(1.0)
    return int(os.environ.get("HOMEPORT_HOST_PID") or os.getpid())


@app.function()
def ids(x):
    """The input's own ids, as its code sees them while it runs."""
    return x, modal.current_input_id(), modal.current_function_call_id()


def _raise_deep(x):
    raise KeyError(f"deep {x}")


@app.function()
def raises_deep(x, every):
    """Inputs `x % every == 5` raise from a helper: the traceback names both user frames."""
    if x % every == 5:
        _raise_deep(x)
    return x


class Point:
    def __init__(self, x):
        self.x = x


@app.function()
def mixed(x):
    """Plain values, and now and then a value of another kind (a dict, an object, one that cannot be
    pickled, a coroutine's): each comes back at its own place."""
    if x % 50 == 7:
        return {"x": x, "sq": [x, x * x]}
    if x % 50 == 11:
        return Point(x)
    if x % 50 == 13:
        import threading

        return threading.Lock()  # cannot be pickled: a SerializationError for this input alone

    if x % 50 == 17:
        async def later():
            return -x

        return later()
    return x


@app.function()
def describe(*args):
    """What each argument arrived as: its type and value, as the caller can compare them."""
    return [(type(a).__name__, repr(a)) for a in args]


@app.function(retries=modal.Retries(max_retries=2, initial_delay=0.0, backoff_coefficient=1.0))
def fails_once_plain(x):
    """As `fails_once`, with no keyword arguments: its inputs travel as plain values, not pickled."""
    return _fail_first_attempt(x, 97, "plain-attempts")
