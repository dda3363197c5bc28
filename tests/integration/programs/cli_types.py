"""`homeport run` argument parsing: options after FUNC_REF, and the annotation types it parses."""

import datetime
from typing import Literal, Optional

import modal

app = modal.App("cli-types")


@app.local_entrypoint()
def main(detach: bool = False, quiet: bool = False, w: str = "none"):
    # The same names as homeport's own options: after FUNC_REF they are this function's.
    print(f"detach={detach} quiet={quiet} w={w}")


@app.function()
def when(d: datetime.datetime, later: Optional[datetime.datetime] = None, mode: Literal["a", "b"] = "a") -> str:  # noqa: UP045
    return f"{type(d).__name__} {d.isoformat()} {later.isoformat() if later else None} {mode}"


@app.function()
def greet(name: str, times: int = 1) -> str:
    return name * times


@app.function()
def listy(xs: list[int]) -> str:
    return str(xs)
