"""Output that streams live, in order, without `flush=True`, from functions and web handlers."""

import os
import sys
import time

import modal

app = modal.App("output-app")


def _wait(gate: str) -> None:
    deadline = time.monotonic() + 60
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nobody opened the gate {gate}: the line printed before it never arrived")
        time.sleep(0.01)


@app.function()
def talk(gates: list[str]) -> str:
    """Prints a line to stdout then one to stderr (no flush), waits for the caller to have seen them
    (it opens `gates[i]`), and so on: the caller sees each line before the function returns."""
    for i, gate in enumerate(gates):
        print(f"out line {i}")
        print(f"err line {i}", file=sys.stderr)
        _wait(gate)
    return "done"


@app.function()
@modal.fastapi_endpoint()
def handler(word: str = "hi"):
    print(f"web handler says {word}")
    return {"word": word}


@app.local_entrypoint()
def main(gate_dir: str, n: int = 3):
    print("result", talk.remote([os.path.join(gate_dir, f"gate-{i}") for i in range(n)]))
