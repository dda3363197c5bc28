"""Keep the control plane's state directory out of a forked container's view.

A container runs as the same OS user as the control plane, so file permissions do not keep it from
what the state directory holds: the installation's token, the key that decrypts every secret and the
database it decrypts, other apps' volumes, other containers' scratch directories, the server's log.
So each container gets a mount namespace of its own in which that directory is an empty tmpfs, with
only what the container needs bound back at the same paths (`hide`; the backend makes the plan: the
control plane's socket, the image environments read-only, the container's own scratch directory...).

Once its mounts are made the container enters a user namespace of its own that owns none of them
(`lock`), with its user and group mapped to themselves (its ids stay what they were): its code cannot
unmount the tmpfs, and it cannot reach the host's view through another process either, since a
process in one user namespace may not look into (ptrace, /proc/<pid>/root, /fd, /mem) one outside it.

A template makes its containers' namespaces possible by being privileged in a mount namespace of its
own (`own_namespace`): root already is; any other user gets that from an unprivileged user namespace.
A snapshot template runs the user's code itself, so it hides the directory from itself first and then
enters a new user namespace, which leaves it the right to make its containers' mounts but not to undo
its own. A runtime template runs no user code: its view is the host's, which its containers hide from
themselves.

The template tries all of it once in a throw-away child (`_mountns.probe`) before it says it is ready;
where the machine does not allow it, the backend says so in the app's log.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from typing import Any

from ._mountns import CLONE_NEWNS, MS_BIND, MS_PRIVATE, MS_REC, _call, _lib, _mount

CLONE_NEWUSER = 0x10000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1 << 10
MS_NODIRATIME = 1 << 11
MS_RELATIME = 1 << 21
# A bind mount's flags that a less privileged namespace may not clear: a read-only remount restates them.
_KEPT_FLAGS = ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
               (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME))


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def new_user_namespace(flags: int = CLONE_NEWNS) -> None:
    """Enter a new user namespace (and a new mount namespace owned by it) with this process's user and
    group mapped to themselves: privileged there, while every mount inherited is locked in place."""
    uid, gid = os.geteuid(), os.getegid()
    _call(_lib().unshare(CLONE_NEWUSER | flags), "unshare(CLONE_NEWUSER)")
    _write("/proc/self/setgroups", "deny")  # what an unprivileged process must say before mapping its group
    _write("/proc/self/uid_map", f"{uid} {uid} 1")
    _write("/proc/self/gid_map", f"{gid} {gid} 1")


def own_namespace() -> None:
    """Be privileged in a mount namespace of this process's own, whose mounts reach no other."""
    if _lib().unshare(CLONE_NEWNS) != 0:
        new_user_namespace()  # not privileged here (not root, or under bubblewrap)
    _mount(None, "/", None, MS_REC | MS_PRIVATE)


def lock() -> None:
    """Enter a user namespace of this process's own, which owns none of its mounts: from now on its
    view cannot change, and it cannot look into a process outside."""
    new_user_namespace(flags=0)


def _mount_point(path: str, directory: bool, made: set[str]) -> None:
    """Make `path` in the fresh tmpfs, and its parents (`made`: those already there)."""
    parent = os.path.dirname(path)
    if parent == path:
        raise OSError(f"a path to keep is not under the hidden directory: {path}")
    if parent not in made:
        _mount_point(parent, True, made)
    if os.path.lexists(path):  # inside a kept directory bound back already (a container's own entry there)
        made.add(path)
        return
    if directory:
        os.mkdir(path, 0o755)
    else:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    made.add(path)


def _kept_flags(path: str) -> int:
    flags = os.statvfs(path).f_flag
    return sum(ms for st, ms in _KEPT_FLAGS if flags & st)


def hide(plan: dict[str, Any]) -> None:
    """In a new mount namespace, cover `plan["dir"]` with an empty tmpfs and bind each of
    `plan["keep"]` ([path, read_only], under it) back at its path; a path that does not exist is left out."""
    _call(_lib().unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    held: list[tuple[int, str, bool]] = []
    try:
        # Opened before they are covered: a bind from /proc/self/fd/N reaches them under the tmpfs.
        for path, read_only in _by_depth(plan["keep"]):
            try:
                held.append((os.open(path, os.O_PATH | os.O_CLOEXEC), path, bool(read_only)))
            except FileNotFoundError:
                continue
        _mount("homeport-hidden", plan["dir"], "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700")
        made = {plan["dir"]}
        for fd, path, read_only in held:
            _mount_point(path, stat.S_ISDIR(os.fstat(fd).st_mode), made)
            _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
            if read_only:
                _mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | _kept_flags(path))
    finally:
        for fd, _path, _ro in held:
            os.close(fd)
    _outside(plan.get("outside") or ())


def _outside(entries: Sequence[Sequence[Any]]) -> None:
    """Kept paths outside the hidden directory, bound over themselves: the writable ones (a container's
    own entries) first, then the read-only ones (a recursive bind keeps those inside writable)."""
    entries = [(p, ro) for p, ro in _by_depth(entries) if os.path.exists(p)]
    for path, _ro in [e for e in entries if not e[1]][::-1]:
        _mount(path, path, None, MS_BIND)
    for path, _ro in [e for e in entries if e[1]]:
        _mount(path, path, None, MS_BIND | MS_REC)
        _mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | _kept_flags(path))


def hide_or_leave(plan: dict[str, Any]) -> None:
    """`hide` then `lock`, in a container forked from a template whose probe showed both work; if they
    fail now it leaves rather than run the user's code with the secrets in view."""
    import sys

    try:
        hide(plan)
        lock()
    except OSError as exc:
        print(f"homeport: this container could not hide the control plane's state directory ({exc}); "
              "it does not start", file=sys.stderr)
        raise SystemExit(1) from None


def _by_depth(keep: Sequence[Sequence[Any]]) -> list[tuple[str, bool]]:
    return sorted(((p, bool(ro)) for p, ro in keep), key=lambda k: k[0].rstrip("/").count("/"))

