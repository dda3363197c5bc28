"""What a client says when the control plane stops answering (the async client and the blocking
channel both wait on it; see `_protocol`'s liveness constants)."""

from __future__ import annotations

import os
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


class SilenceWatch:
    """While a client waits on the control plane: told how long it has been silent, says whether to ping
    it (quiet for HEARTBEAT_SECONDS), warns on stderr once past SILENCE_WARN_SECONDS and says when it
    answers again, and past HOMEPORT_CONTROL_PLANE_TIMEOUT (when set) raises ConnectionError."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.limit = float(os.environ.get(P.ENV_CONTROL_PLANE_TIMEOUT) or 0) or None
        self.warned = False

    def check(self, silent: float) -> bool:
        """Whether to ping the control plane, silent for `silent` seconds (raises past the limit)."""
        if silent >= P.SILENCE_WARN_SECONDS and not self.warned:
            self.warned = True
            say_silent(self.address, self.limit)
        elif self.warned and silent < P.HEARTBEAT_SECONDS:
            self.heard()
        if self.limit is not None and silent >= self.limit:
            raise gave_up(self.address, silent, self.limit)
        return silent >= P.HEARTBEAT_SECONDS

    def heard(self) -> None:
        """The control plane answered."""
        if self.warned:
            self.warned = False
            say_answers_again()
