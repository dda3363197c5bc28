"""What a container sees of the control plane's state directory (`PrivateDir`): an empty directory,
with only the paths it needs bound back at their own places.

Containers run as the same OS user as the control plane, so permissions cannot keep the token, the
key to every secret, other apps' volumes or other containers' scratch directories from them; their
mount namespace does. `plan` says what to hide and what to keep, as data: a forked container (and a
snapshot template, before the user's code runs in it) carries it out itself (`homeport.runtime._hide`),
a spawned one gets it as bubblewrap arguments (`bwrap_args`). A container in an image's own root file
system sees only what is bound into that root, and needs neither.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from typing import Any

from .._base import PrivateDir

# {"dir": path, "keep": [[path, read_only], ...], "outside": [[path, read_only], ...] (optional)}:
# msgpack-able, for the runtime
Plan = dict[str, Any]


def _under(path: str, directory: str) -> bool:
    return path.startswith(directory.rstrip("/") + "/")


def shared_dirs(private: PrivateDir | None) -> list[str]:
    """The writable directories `private` keeps (the web endpoints' sockets): shared by every container,
    each of which may write only its own entry there, `<directory>/<container id>` (`own_entries`)."""
    if private is None:
        return []
    return [m.source.rstrip("/") for m in private.keep if not m.read_only and os.path.isdir(m.source)]


def own_entries(private: PrivateDir | None, cid: str) -> list[str]:
    """Container `cid`'s own directory in each shared directory, made here (0700) if missing."""
    out = []
    for d in shared_dirs(private):
        path = os.path.join(d, cid)
        os.makedirs(path, mode=0o700, exist_ok=True)
        out.append(path)
    return out


def remove_own_entries(private: PrivateDir | None, cid: str) -> None:
    for d in shared_dirs(private):
        shutil.rmtree(os.path.join(d, cid), ignore_errors=True)


def plan(private: PrivateDir | None, own: Sequence[str] = (), container: bool = False) -> Plan | None:
    """The directory to hide and the paths to keep: `private.keep` and the container's `own` (its
    scratch directory, writable), those under the directory only, the shallower first (a deeper
    one is bound on top of it). For a `container` the shared directories are read-only (it writes
    its own entries there, among `own`): it cannot replace another container's web socket."""
    if private is None:
        return None
    shared = set(shared_dirs(private)) if container else set()
    every = [(m.source, m.read_only or m.source.rstrip("/") in shared) for m in private.keep] + [(p, False) for p in own]
    every = sorted(((p.rstrip("/"), ro) for p, ro in every), key=lambda k: k[0].count("/"))
    keep = [[p, ro] for p, ro in every if _under(p, private.path)]
    # Kept paths outside the directory (the web sockets' directory under /tmp, where the state
    # directory's path is too long for a socket address): bound over themselves, by the same rule.
    outside = [[p, ro] for p, ro in every if not _under(p, private.path)]
    return {"dir": private.path.rstrip("/"), "keep": keep, **({"outside": outside} if outside else {})}


def bwrap_args(hide: Plan, lock: bool = True) -> list[str]:
    """bubblewrap arguments that do what `hide` says, to follow the binds of the host's directories.
    bubblewrap takes each source from the host's own view, so what the tmpfs covers can be bound.
    In a user namespace of its own and without capabilities the container can neither unmount the
    tmpfs nor look into a process outside (/proc/<pid>/root of one that sees the host's view).
    `lock` False: it keeps its privilege, to drop it itself (`homeport.runtime._spawned`)."""
    args = ["--unshare-user", "--cap-drop", "ALL"] if lock else []
    args += ["--tmpfs", hide["dir"]]
    for path, read_only in [*hide["keep"], *hide.get("outside", ())]:
        args += ["--ro-bind-try" if read_only else "--bind-try", path, path]
    return args
