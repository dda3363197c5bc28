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


@app.function(retries=modal.Retries(max_retries=2, initial_delay=0.0, backoff_coefficient=1.0))
def fails_once(x, every):
    """Inputs `x % every == 3` fail their first attempt (their attempts counted in `notes`)."""
    if x % every == 3:
        key = f"attempts-{x}"
        n = notes.get(key, 0)
        notes[key] = n + 1
        if n == 0:
            raise ValueError(f"first attempt of {x}")
    return x


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
