"""`modal.stream_type.StreamType`: where a sandbox exec's stdout or stderr goes."""

from __future__ import annotations

import enum
import subprocess

__all__ = ["StreamType"]


class StreamType(enum.Enum):
    PIPE = subprocess.PIPE  # read it from `process.stdout` / `process.stderr`
    DEVNULL = subprocess.DEVNULL  # discard it
    STDOUT = subprocess.STDOUT  # stderr only: into the same stream as stdout

    def __repr__(self) -> str:
        return f"{self.__module__}.{self.__class__.__name__}.{self.name}"
