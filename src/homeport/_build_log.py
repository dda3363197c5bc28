"""Image build output for people at a terminal: the steps and how long each took, not every line a
package installer prints (about 60 lines for `fastapi[standard]`). The full log is written to a file
named at the end, and printed in full with `HOMEPORT_IMAGE_LOGS=full` (or whenever output is not a
terminal, as before). A failed build shows the last lines of its log."""

from __future__ import annotations

import os
import re
import tempfile
import time
from typing import Any

_STEP_LINE = re.compile(r"^=> ")  # the control plane's own lines: a step starts, is done, failed, cached
FAILURE_TAIL = 30  # lines of the log shown when a build fails


def summarise_wanted(interactive: bool) -> bool:
    mode = os.environ.get("HOMEPORT_IMAGE_LOGS", "")
    return mode != "full" and (interactive or mode == "summary")


class BuildLogSummary:
    """Decides which image build lines to print; keeps them all for a file (written only when some
    were not printed, or the build failed)."""

    def __init__(self, directory: str | None = None) -> None:
        self._directory = directory
        self.path: str | None = None
        self._lines: list[str] = []
        self.hidden = 0

    def feed(self, line: str) -> bool:
        """Keep `line` in the full log; True if it is to be printed now."""
        self._lines.append(line if line.endswith("\n") else line + "\n")
        if _STEP_LINE.match(line):
            return True
        self.hidden += 1
        return False

    def close(self, failed: bool) -> list[str]:
        """What to print at the end: the log's last lines if the build failed; where the full log is."""
        if not (self.hidden or (failed and self._lines)):
            return []
        directory = self._directory or tempfile.gettempdir()
        os.makedirs(directory, exist_ok=True)
        fd, self.path = tempfile.mkstemp(prefix=time.strftime("image-build-%Y%m%d-%H%M%S-"), suffix=".log",
                                         dir=directory)
        with os.fdopen(fd, "w") as f:
            f.writelines(self._lines)
        out = []
        if failed:
            out += ["The build's last lines:", *(line.rstrip("\n") for line in self._lines[-FAILURE_TAIL:])]
        out.append(f"Full build log ({self.hidden} lines not shown): {self.path} "
                   "(HOMEPORT_IMAGE_LOGS=full prints it all)")
        return out


def printable(msg: dict[str, Any]) -> str:
    return str(msg.get("data", ""))
