"""Progress on a terminal for long work: a spinner naming the step of an image build, a bar for big maps.

Drawn only when stderr is a terminal: anywhere else (pipes, files, CI, tests) the output stays the
plain log lines it always was. Map bars are opt-in (`homeport run` turns them on), so a library that
calls `.map()` inside someone else's program draws nothing it was not asked to. rich is imported only
when something is drawn, so `import homeport` stays light.

Set `HOMEPORT_PROGRESS=0` to draw nothing even on a terminal.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from typing import Any

MAP_BAR_MIN_INPUTS = 100  # smaller maps finish before a bar would tell anyone anything

# The control plane's build log names each step as it starts: "=> Step 2/5: pip_install('six')".
_STEP = re.compile(r"^=> Step (\d+)/(\d+): (.+)$")

_settings = {"quiet": False, "maps": False}


def configure(*, quiet: bool | None = None, maps: bool | None = None) -> None:
    """`quiet`: draw nothing (`homeport run -q`); `maps`: draw a bar for big `.map()` calls."""
    if quiet is not None:
        _settings["quiet"] = quiet
    if maps is not None:
        _settings["maps"] = maps


def interactive() -> bool:
    """Whether to draw: stderr is a terminal, and nobody asked for quiet."""
    if _settings["quiet"] or os.environ.get("HOMEPORT_PROGRESS") == "0":
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


class ImageBuildStatus:
    """A spinner while the control plane builds images, naming the step it is on.

    It starts at the first build log line, so a cached image (which logs nothing) draws nothing.
    While it spins, rich shows what is printed (the build log itself) above it.
    """

    def __init__(self) -> None:
        self._enabled = interactive()
        self._status: Any = None

    def on_log(self, msg: dict[str, Any]) -> None:
        if not self._enabled or msg.get("fn") != "image":
            return
        label = f"image {msg['cid']}" if msg.get("cid") else "image"
        step = _STEP.match(str(msg.get("data", "")).strip())
        text = f"Building {label}: step {step[1]}/{step[2]}, {step[3]}" if step else None
        if self._status is None:
            from rich.markup import escape

            self._escape = escape
            self._status = _console().status(escape(text or f"Building {label}"), spinner="dots")
            self._status.start()
        elif text:
            self._status.update(self._escape(text))

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


class _MapBars:
    """One rich Progress for every map in flight (rich draws one live display at a time)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._progress: Any = None
        self._tasks = 0

    def add(self, description: str) -> int:
        with self._lock:
            if self._progress is None:
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    Progress,
                    SpinnerColumn,
                    TextColumn,
                    TimeElapsedColumn,
                )

                self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                          MofNCompleteColumn(), TimeElapsedColumn(), console=_console())
                self._progress.start()
            self._tasks += 1
            return self._progress.add_task(description, total=None)

    def update(self, task: int, done: int, total: int | None) -> None:
        progress = self._progress
        if progress is not None:
            progress.update(task, completed=done, total=total)

    def remove(self, task: int) -> None:
        with self._lock:
            self._tasks -= 1
            if self._tasks == 0 and self._progress is not None:
                self._progress.stop()  # the finished bars stay on screen as a record
                self._progress = None


_bars = _MapBars()


class MapBar:
    """Outputs received of one `.map()`; the total is known once every input was sent."""

    def __init__(self, tag: str) -> None:
        self._task = _bars.add(f"{tag}.map()")

    def update(self, done: int, total: int | None) -> None:
        _bars.update(self._task, done, total)

    def close(self) -> None:
        _bars.remove(self._task)


def map_bars_wanted() -> bool:
    return _settings["maps"] and interactive()
