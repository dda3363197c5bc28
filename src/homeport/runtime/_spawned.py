"""A container started as a fresh process (not forked from a template) makes itself a container too.

The local backend starts it under bubblewrap, still host root there when the control plane is root:
bubblewrap gives it its PID namespace, its network, the host read-only and the state directory hidden,
but can only map the user it runs as (root) into a user namespace. So bubblewrap keeps its privilege,
and the runtime, before anything of the user's runs, does what a forked container does (`_isolate`):
a private /tmp and home, the paths it writes bound idmapped, then it becomes the unprivileged host user
(65534 unless the control plane is told otherwise) that is root only in a user namespace of its own.
Where that fails it goes on as bubblewrap would have left it (a user namespace of its own mapped to
the control plane's user, which owns none of its mounts: `_hide.lock`), and says so in its log.
"""

from __future__ import annotations

import json
import os
import sys

from .. import _protocol as P


def isolate_if_asked() -> None:
    raw = os.environ.pop(P.ENV_ISOLATE, None)
    if not raw:
        return
    from .. import _mountapi
    from . import _hide, _isolate

    settings = json.loads(raw)
    uid = int(settings["uid"])
    needed = [*settings.get("needed", ()), *[[p, False] for p in _interpreter_paths()]]
    try:
        idmap = _mountapi.idmap_namespace(uid)
        notes = _isolate.isolate(needed, settings.get("hidden"), uid, idmap, pidns=False)
    except OSError as exc:
        notes = [f"this container keeps the control plane's user in its user namespace ({exc})"]
        if os.geteuid() == 0 and _isolate.in_initial_user_namespace():
            _hide.lock()  # as bubblewrap would have: no privilege over its mounts, nor over the host
    for note in notes:
        print(f"homeport: {note}", file=sys.stderr)


def _interpreter_paths() -> list[str]:
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    paths.update(p for p in sys.path if p and os.path.isdir(p))
    return sorted(paths)
