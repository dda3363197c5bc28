"""A forked container's own namespaces: its processes, its file system view, its user.

A container forked from a template (`_template`) makes itself a container before any user code runs
in it (`isolate`), still privileged in its template's namespaces:

- **PID namespace.** The template forks it into a PID namespace of its own (`fork_in_new_pid_namespace`:
  unshare(CLONE_NEWPID) just before fork, setns back after), where it is process 1; it mounts a
  /proc of that namespace, so it sees only its own processes. When it exits, the kernel kills
  whatever is left in its namespace.
- **Mount namespace.** The host's mounts become read-only in its view. The control plane's state
  directory, /tmp, /root and /dev/shm are covered by empty file systems of its own (a private
  writable /tmp and home); what it needs there is bound back at the same paths (`needed`): the
  control plane's socket, the image environments (read-only), its scratch directory, its volumes,
  the user's code. Where its user cannot reach a needed path (a 0700 directory on the way, such as
  /root or pytest's /tmp/pytest-of-root) the directory on the way is covered and the path bound back.
- **User namespace.** Last, it leaves every privilege: when the control plane runs as root, it
  becomes an unprivileged host user (`uid`, 65534 unless the control plane is told otherwise) and
  then enters a user namespace of its own where that user is root (/proc/self/uid_map: `0 <uid> 1`).
  The paths it may write (its volumes, scratch directory, the socket) are bound *idmapped*: host
  root's files there look like its own, and what it writes lands as host root's, as before. The host's
  other files are those of another user, read-only besides. When the control plane is not root the
  container keeps the control plane's unprivileged user (mapped to itself), as before.

A memory snapshot's template runs the user's code (imports, `snap=True` hooks) before it forks, so
when the control plane is root it first makes itself what its containers are (`isolate` with the
container's user, then `become_pid_one`: process 1 of a PID namespace of its own, with its own /proc,
mounted as host root and locked in its view, `proc_mounter`): an unprivileged host user that is root only in its user namespace, the host read-only, the
state directory hidden. Its containers inherit that, and each is then forked into a PID namespace of
its own inside the template's and isolates itself there, root in the template's user namespace (which
owns what it mounts), with the paths it keeps mounted from idmapped copies the backend made for it
(`given`), then becomes its own host user (mapped in the template's namespace: `_copyusers`) and root
of a user namespace of its own (its uid_map reads `0 <its host user> 1`). The template's pids are not
the host's: see `_template` for how the backend learns a container's host pid.

Python 3.11's `os` has no unshare(), setns(), mount() or the new mount API, so they are called
through ctypes (syscall numbers of x86-64 and arm64, where the new mount API has the same numbers).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Sequence
from typing import Any

from .._mountapi import (
    MOUNT_ATTR_IDMAP,
    MOUNT_ATTR_RDONLY,
    mount_setattr,
    move_mount,
    open_tree,
)
from ._mountns import CLONE_NEWNS, MS_BIND, MS_PRIVATE, MS_REC, _call, _lib, _mount, mount_points
from ._pidns import (
    CLONE_NEWUSER,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    become_pid_one,
    enter_own_pid_namespace,
    fork_in_new_pid_namespace,
    host_pid,
    pid_namespaces_work,
    proc_mounter,
    try_own_pid_namespace,
)

MS_REMOUNT = 32
PR_SET_DUMPABLE = 4
# Covered by an empty file system of the container's own: (path, mode).
COVERED = (("/tmp", 0o1777), ("/root", 0o700), ("/dev/shm", 0o1777))
# Mounts left as they are (a /proc of its own is mounted over the host's; /dev holds the devices).
_LEFT = ("/proc", "/dev")


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


# --- the template's side --------------------------------------------------------------------------------

def in_initial_user_namespace() -> bool:
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() == ["0", "0", "4294967295"]
    except OSError:
        return False


# --- the container's side --------------------------------------------------------------------------------


def _blocked(path: str, uid: int, passable: dict[str, bool] | None = None) -> str | None:
    """The outermost directory on the way to `path` that host user `uid` may not pass, if any
    (`passable`: what is known of directories already, shared between calls)."""
    known = {} if passable is None else passable
    parts = [p for p in path.split("/") if p]
    current = ""
    for part in parts[:-1] if parts else []:
        current += "/" + part
        ok = known.get(current)
        if ok is None:
            try:
                st = os.stat(current)
            except OSError:
                return None
            ok = known[current] = st.st_uid == uid or bool(st.st_mode & stat.S_IXOTH)
        if not ok:
            return current
    return None


def _make_point(path: str, directory: bool) -> None:
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        os.makedirs(parent, 0o755, exist_ok=True)
    if directory:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o755)
    elif not os.path.exists(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))


_OPTION_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": 1 << 10,
                 "nodiratime": 1 << 11, "relatime": 1 << 21}


def _mounts() -> dict[str, int]:
    """Mount point -> the flags a read-only remount must restate (its per-mount options, from
    /proc/self/mountinfo: a bind remount sets exactly the flags it is given)."""
    with open("/proc/self/mountinfo") as f:
        info = f.read()
    points = mount_points(info)
    flags = [sum(_OPTION_FLAGS.get(o, 0) for o in line.split()[5].split(","))
             for line in info.splitlines() if line.strip()]
    return dict(zip(points, flags))


def warm() -> None:
    """Do once in the template what every container would otherwise do again (compile the patterns)."""
    _mounts()


def isolate(needed: Sequence[Sequence[Any]], hidden: str | None, uid: int | None, idmap: int,
            pidns: bool = True, given: dict[str, int] | None = None,
            user_ns: Callable[[], None] | None = None) -> list[str]:
    """Make this process (process 1 of its PID namespace, privileged in its template's namespaces) a
    container (see the module docstring). `needed`: [path, writable] to keep at their paths; `hidden`:
    the control plane's state directory; `uid`: the host user to become (None: stay who it is, mapped
    to itself); `idmap`: a user namespace descriptor (`idmap_namespace`), or -1; `pidns`: it is in a
    PID namespace of its own, whose /proc it mounts; `given`: path -> a detached mount, already
    idmapped for `uid`, to mount there instead of a copy of its own (`_copyusers`; taken, closed);
    `user_ns`: enters the user namespace for `uid` instead of one mapping only `uid` (`_copyusers`).
    What it could not do and went on without, in words (an empty list: everything)."""
    given = dict(given or {})
    try:
        return _isolate(needed, hidden, uid, idmap, pidns, given, user_ns)
    finally:
        for fd in given.values():
            with contextlib.suppress(OSError):
                os.close(fd)


def _isolate(needed: Sequence[Sequence[Any]], hidden: str | None, uid: int | None, idmap: int, pidns: bool,
             given: dict[str, int], user_ns: Callable[[], None] | None) -> list[str]:
    notes: list[str] = []
    _call(_lib().unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    original = _mounts()
    wanted = sorted({(p.rstrip("/") or "/", bool(rw)) for p, rw in needed if p and os.path.exists(p)},
                    key=lambda k: k[0].count("/"))
    covers = [(hidden, 0o755 if uid is not None else 0o700)] if hidden else []
    covers += [(p, m) for p, m in COVERED if os.path.isdir(p) and not os.path.islink(p)]
    if uid is not None:
        passable: dict[str, bool] = {}
        for path, _rw in wanted:
            blocked = _blocked(path, uid, passable)
            if blocked:
                covers.append((blocked, 0o755))
    covers = sorted(set(covers), key=lambda c: c[0].count("/"))

    def shadowed(path: str) -> bool:  # read-only, inside a writable one that is bound back as it is
        return any(rw and path != q and _under(path, q) and
                   not any(_under(c, q) and c != q and _under(path, c) for c, _ in covers) for q, rw in wanted)

    wanted = [(p, rw) for p, rw in wanted if rw or not shadowed(p)]
    # 1. Copies of what it keeps, made before anything covers them (idmapped where it will write).
    clones: list[tuple[str, int, bool]] = []
    try:
        for path, rw in wanted:
            if path in given:  # made by the backend for this container's user
                clones.append((path, given.pop(path), stat.S_ISDIR(os.stat(path).st_mode)))
                continue
            covered = any(_under(path, c) for c, _ in covers)
            if not covered and not (rw and idmap >= 0):
                continue  # in view as it is (a volume: its own mount, left writable below)
            fd, recursive = open_tree(path)
            attrs = 0 if rw else MOUNT_ATTR_RDONLY
            if idmap >= 0:
                try:
                    mount_setattr(fd, attrs | MOUNT_ATTR_IDMAP, idmap)
                    attrs = -1
                except OSError as exc:
                    notes.append(f"{path} cannot be idmapped here ({exc})")
            if attrs > 0:
                mount_setattr(fd, attrs, recursive=recursive)
            clones.append((path, fd, stat.S_ISDIR(os.stat(path).st_mode)))
        # 2. The host read-only: every mount it inherited, but for its devices, /proc and its volumes.
        writable = {p for p, rw in wanted if rw}
        for point in sorted(original, key=lambda p: p.count("/")):
            if any(_under(point, d) for d in _LEFT) or point in writable:
                continue
            if any(_under(point, c) for c, _ in covers):
                continue  # covered: out of view
            try:
                _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | original[point])
            except OSError as exc:
                notes.append(f"{point} stays writable ({exc})")
        # 3. Outermost first: its own /tmp, home and shared memory, the state directory and what it may
        # not pass covered by empty file systems; what it keeps bound back at its path (a cover inside
        # what is bound back, such as the state directory inside a shared directory, covers it again).
        steps = [(c.count("/"), 0, c, mode, -1, True) for c, mode in covers]
        steps += [(p.count("/"), 1, p, 0, fd, d) for p, fd, d in clones]
        for _depth, kind, path, mode, fd, directory in sorted(steps, key=lambda s: s[:2]):
            if kind == 0:
                if not os.path.isdir(path):
                    continue  # under a cover already, and not bound back: out of view
                owner = f",uid={uid},gid={uid}" if uid is not None and path in dict(COVERED) else ""
                _mount("homeport-container", path, "tmpfs", MS_NOSUID | MS_NODEV, f"mode={mode:o}{owner}")
            else:
                if not os.path.lexists(path):
                    _make_point(path, directory)
                move_mount(fd, path)
    finally:
        for _path, fd, _d in clones:
            os.close(fd)
    # 5. Its own processes only.
    if pidns:
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    # 6. No privilege left: a user namespace of its own owns none of these mounts.
    if idmap >= 0:
        os.close(idmap)
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        _lib().prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # its /proc/self is its own again, to write its maps
        if user_ns is not None:
            user_ns()
        else:
            _user_namespace(f"0 {uid} 1", f"0 {uid} 1")
    else:
        uid, gid = os.geteuid(), os.getegid()
        _user_namespace(f"{uid} {uid} 1", f"{gid} {gid} 1")
    return notes


def _user_namespace(uid_map: str, gid_map: str) -> None:
    _call(_lib().unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
    for name, text in (("setgroups", "deny"), ("uid_map", uid_map), ("gid_map", gid_map)):
        fd = os.open(f"/proc/self/{name}", os.O_WRONLY)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)


__all__ = ["become_pid_one", "enter_own_pid_namespace", "fork_in_new_pid_namespace", "host_pid", "isolate", "pid_namespaces_work", "proc_mounter", "try_own_pid_namespace"]
