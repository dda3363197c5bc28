"""How the CLI shows an exception that the user's program raised: the user's traceback once, with the
user's frames. Frames of Homeport, click and the Python installation only with HOMEPORT_TRACEBACK=1;
a remote traceback already shown in the container's output is not shown again."""

from __future__ import annotations

import os
import sys
import sysconfig
import traceback

import homeport

from .. import _client

_REMOTE_NOTE = "\nRemote traceback (from "


def _hidden_roots() -> tuple[str, ...]:
    roots = {os.path.dirname(os.path.abspath(homeport.__file__)), sys.prefix, sys.base_prefix, sys.exec_prefix}
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(name)
        if path:
            roots.add(path)
    return tuple(os.path.abspath(r) + os.sep for r in roots)


def _trim(te: traceback.TracebackException, hidden: tuple[str, ...], seen: set[int]) -> None:
    if id(te) in seen:
        return
    seen.add(id(te))
    te.stack = traceback.StackSummary.from_list(
        [f for f in te.stack if not (f.filename.startswith("<") or os.path.abspath(f.filename).startswith(hidden))]
    )
    notes = getattr(te, "__notes__", None)
    if notes:
        te.__notes__ = [n for n in notes if not (n.startswith(_REMOTE_NOTE) and _client.was_shown(n))]
    for chained in (te.__cause__, te.__context__):
        if chained is not None:
            _trim(chained, hidden, seen)


def format_user_error(exc: BaseException) -> str:
    """The exception as the user should see it (see the module's docstring)."""
    te = traceback.TracebackException.from_exception(exc)
    if os.environ.get("HOMEPORT_TRACEBACK") == "1":
        return "".join(te.format())
    _trim(te, _hidden_roots(), set())
    text = "".join(te.format())
    if not te.stack:  # no frame of the user's left: no header announcing them
        text = text.replace("Traceback (most recent call last):\n", "", 1)
        remote = any(str(n).startswith(_REMOTE_NOTE) for n in getattr(exc, "__notes__", None) or ())
        if not isinstance(exc, SyntaxError) and not remote:
            text += "(HOMEPORT_TRACEBACK=1 shows where in Homeport it was raised.)\n"
    return text


def report_user_error(exc: BaseException) -> None:
    sys.stdout.flush()
    sys.stderr.write(format_user_error(exc))
    sys.stderr.flush()
