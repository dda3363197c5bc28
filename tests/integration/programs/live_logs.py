"""A function that prints, then waits until the caller has seen that line: logs must stream live."""

import os
import time

import modal

app = modal.App("live-logs")


@app.function()
def talk_then_wait(gate: str) -> str:
    print("waiting for the gate")  # no flush=True: output travels at once
    deadline = time.monotonic() + 60
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError("the caller never saw the line printed before the gate")
        time.sleep(0.01)
    return "through"


@app.local_entrypoint()
def main(gate: str):
    print("result", talk_then_wait.remote(gate))
