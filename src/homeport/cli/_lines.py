"""Container output printed between whole lines of the local program's own output.

`print("result", x)` writes its text and its newline in two writes; container lines arrive on another
thread and used to land between them ("result=HEY[shout 76d4] out: hey"). `LineGuard` wraps the local
`sys.stdout`/`sys.stderr` under `homeport run`: a container line that arrives in the middle of a local
line waits until that line ends (or, for a line that never ends, a moment)."""

from __future__ import annotations

import threading
from typing import Any, TextIO

HOLD_SECONDS = 0.2  # a local partial line (a prompt, a progress bar) holds container lines at most this long


class LineGuard:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._at_line_start = True
        self._held: list[str] = []
        self._timer: threading.Timer | None = None

    def write(self, text: str) -> int:
        with self._lock:
            n = self._stream.write(text)
            if text:
                self._at_line_start = text.endswith("\n")
            if self._at_line_start and self._held:
                self._release()
            return n

    def write_log(self, text: str) -> None:
        """A container's line: now if the local output is at the start of a line, else once it is."""
        with self._lock:
            if self._at_line_start and not self._held:
                self._stream.write(text)
                self._stream.flush()
                return
            self._held.append(text)
            if self._timer is None:
                self._timer = threading.Timer(HOLD_SECONDS, self._expire)
                self._timer.daemon = True
                self._timer.start()

    def _expire(self) -> None:
        with self._lock:
            self._timer = None
            if self._held:
                self._stream.write("\n")  # the local line did not end: container lines go on the next ones
                self._at_line_start = True
                self._release()

    def _release(self) -> None:
        self._stream.write("".join(self._held))
        self._held.clear()
        self._stream.flush()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def flush(self) -> None:
        with self._lock:
            if self._held:
                if not self._at_line_start:
                    self._stream.write("\n")
                    self._at_line_start = True
                self._release()
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
