"""Containers forked from one memory snapshot, each a host user of its own.

A memory snapshot's template runs the user's code (imports, `snap=True` hooks) before it forks, so it
leaves host root first (`_template._isolate_itself`): it becomes an unprivileged host user and root of
a user namespace of its own. Its containers used to share that user; now each becomes the host user
the backend chose for it (`Fork.uid`: `CONTAINER_UIDS` + n), root only in a user namespace of its own:

- **The template's user namespace maps a range.** An unprivileged process may map only its own id, so
  a helper forked while the template is still host root writes the maps (`ranged_user_namespace`):
  root to the template's user, and every per-container user to itself (`map_text`). Root there, the
  template's copies may become any of those users (setresuid), then each makes a nested user namespace
  where it is root (`_isolate.isolate`): /proc/self/uid_map reads `0 <its host user> 1`.
- **What a copy keeps in view comes from the backend.** The template's view of the paths it keeps
  (its scratch directory, its own entry of the web sockets' directory, its volumes, the control
  plane's socket, the image environments) is *idmapped* for the template's user, which a copy no
  longer is, and only host root may make an idmapped mount. So the backend (host root) makes, per
  fork, detached idmapped copies of those paths for the copy's user (read-only but where it writes)
  and passes them with the fork request (`Fork.mounts`, SCM_RIGHTS); the copy mounts them at their
  paths (`given` of `_isolate.isolate`). What it writes there lands as host root's, as a container's
  does elsewhere.
- **The web sockets' directory is read-only in the template's view**, so the snap hooks cannot create,
  replace or remove another container's socket; a copy gets its own entry, writable, from the backend.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from typing import Any

from .. import _protocol as P
from ._mountns import _call, _lib

CLONE_NEWUSER = 0x10000000


def map_text(uid: int) -> str:
    """The template's uid_map and gid_map: its root is host user `uid`; each per-container user maps to
    itself (unless `uid` is one of them: then only its root)."""
    lines = [f"0 {uid} 1"]
    if not P.CONTAINER_UIDS <= uid < P.CONTAINER_UIDS + P.CONTAINER_UID_COUNT:
        lines.append(f"{P.CONTAINER_UIDS} {P.CONTAINER_UIDS} {P.CONTAINER_UID_COUNT}")
    return "\n".join(lines) + "\n"


def ranged_user_namespace(uid: int) -> Callable[[], None]:
    """Prepare, as host root, a user namespace for this process that maps `map_text(uid)`: a helper is
    forked now, still root, which writes the maps once this process has unshared. The function returned
    enters it (unshare, then waits for the helper); call it after leaving root (setresuid to `uid`)."""
    ask_r, ask_w = os.pipe()
    done_r, done_w = os.pipe()
    text = map_text(uid).encode()
    helper = os.fork()
    if helper == 0:  # never returns
        try:
            os.close(ask_w)
            os.close(done_r)
            parent = os.getppid()
            if os.read(ask_r, 1) == b"u":
                for name in ("uid_map", "gid_map"):
                    fd = os.open(f"/proc/{parent}/{name}", os.O_WRONLY)
                    try:
                        os.write(fd, text)
                    finally:
                        os.close(fd)
                os.write(done_w, b"ok")
        finally:
            os._exit(0)
    os.close(ask_r)
    os.close(done_w)

    def enter() -> None:
        try:
            _call(_lib().unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
            os.write(ask_w, b"u")
            if os.read(done_r, 2) != b"ok":
                raise OSError("the helper could not write this user namespace's maps")
        finally:
            close()

    open_fds = [ask_w, done_r]

    def close() -> None:  # once: a number closed twice may name another descriptor by then
        while open_fds:
            with contextlib.suppress(OSError):
                os.close(open_fds.pop())
            if not open_fds:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(helper, 0)

    enter.close = close  # type: ignore[attr-defined]
    return enter


def isolate_snapshot(settings: dict[str, Any], plan: dict[str, Any] | None, read: Sequence[str]) -> list[str]:
    """A snapshot template started as host root becomes, before the user's code runs in it, what its
    containers are: an unprivileged host user (`uid`) that is root in a user namespace of its own (which
    maps the per-container users too: `ranged_user_namespace`), with the host read-only, the state
    directory hidden, the web sockets' directory read-only, a private /tmp and home (`_isolate.isolate`),
    and process 1 of a PID namespace of its own, its /proc locked in place (`_isolate.proc_mounter`).
    Every container forked from it inherits all that, and is then forked into namespaces of its own
    inside it. `read`:
    paths it keeps in view read-only (the interpreter's, the user's code). What it went on without
    (notes); OSError where this machine does not allow it (tried first in a throw-away child, so that
    nothing of it is done then)."""
    from .. import _mountapi
    from . import _isolate, _mountns

    uid = settings["uid"]
    needed = [*settings.get("needed", ()), *[[p, False] for p in read]]
    hidden = plan["dir"] if plan else None

    def attempt() -> list[str]:
        mount_proc = _isolate.proc_mounter()  # its /proc mounted as host root: locked (see there)
        try:
            idmap = _mountapi.idmap_namespace(uid)
            enter = ranged_user_namespace(uid)
            try:
                notes = _isolate.isolate(needed, hidden, uid, idmap, pidns=False, user_ns=enter)
            finally:
                enter.close()  # type: ignore[attr-defined]
            host_pid = _isolate.become_pid_one()
            mount_proc()
        finally:
            mount_proc.close()  # type: ignore[attr-defined]
        if host_pid is not None:  # the snap hooks' process as the host sees it, as in a container
            os.environ[P.ENV_HOST_PID] = str(host_pid)
        return notes

    problem = _mountns.probe(attempt)
    if problem is not None:
        raise OSError(problem)
    return attempt()


__all__ = ["isolate_snapshot", "map_text", "ranged_user_namespace"]
