"""Run as an unprivileged user (by `test_escape.py`): a control plane that is not root, and what a
container forked from a memory snapshot sees of the host's processes. Prints the container's report
as JSON on its last line. argv: state directory, apps directory."""

import json
import os
import sys

from homeport import _modal_alias
from homeport.testing import Platform

state, apps = sys.argv[1], sys.argv[2]
sys.path.insert(0, apps)
with Platform(state) as p:
    _modal_alias.install()
    import escape_host

    targets = {"write": [], "read": [str(p.state_dir / "token")], "pids": [os.getpid(), p.pid]}
    with escape_host.app.run(show_logs=False):
        seen = escape_host.Snapshotted().look.remote(targets)
        seen["plain"] = escape_host.look.remote(targets)  # a container of the runtime's template
    seen["test_pids"] = [os.getpid(), p.pid]
print(json.dumps(seen))
