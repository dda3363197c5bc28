"""What a client says when the control plane stops answering (the async client and the blocking
channel both wait on it; see `_protocol`'s liveness constants)."""

from __future__ import annotations

import sys

from . import _protocol as P
from .exception import ConnectionError


def say_silent(address: str, limit: float | None) -> None:
    sys.stderr.write(f"homeport: the control plane at {address} has not answered for "
                     f"{P.SILENCE_WARN_SECONDS:g} s (is it stopped?); "
                     + (f"giving up after {limit:g} s ({P.ENV_CONTROL_PLANE_TIMEOUT})\n" if limit
                        else f"still waiting (set {P.ENV_CONTROL_PLANE_TIMEOUT} to give up)\n"))
    sys.stderr.flush()


def say_answers_again() -> None:
    sys.stderr.write("homeport: the control plane answers again\n")
    sys.stderr.flush()


def gave_up(address: str, silent: float, limit: float) -> ConnectionError:
    return ConnectionError(f"The Homeport control plane at {address} has not answered for {silent:.0f} s "
                           f"({P.ENV_CONTROL_PLANE_TIMEOUT}={limit:g}).")
