"""A container forked from a template in a root file system image gets its own writable root.

The template runs inside the image's root file system: an overlay whose writes go to a tmpfs of the
template's own. A container forked from it would share that layer with every other copy, so before
running any user code it makes a root of its own (`private_root`): it enters a new mount namespace,
mounts an overlay whose lower layer is the template's root and whose upper layer is a fresh tmpfs,
binds into it everything mounted in the template's root (/dev, /proc, the volumes, the runtime ...),
and changes root to it. Its writes stay its own and vanish with it, as in a container started afresh.

Python 3.11's `os` has no unshare() or mount(), so they are called through ctypes. The template
process is root in its user namespace (it was started under `unshare --mount`), which is what the
calls need; the template tries them once in a throw-away child (`probe`) before it says it is ready.
"""

from __future__ import annotations

import ctypes
import os
import re
from collections.abc import Callable

CLONE_NEWNS = 0x00020000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
# Directories of a Debian root where the new root is assembled (on a tmpfs of the container's own,
# mounted over it only in its namespace): the first one that is not a mount point and has none below.
SCRATCH_DIRS = ("/run", "/mnt", "/media", "/srv")

_libc = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
        _libc.unshare.argtypes = [ctypes.c_int]
    return _libc


def _call(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = [None if v is None else os.fsencode(v) for v in (source, target, fstype, data)]
    _call(_lib().mount(enc[0], enc[1], enc[2], flags, enc[3]), f"mount {target}")


def mount_points(mountinfo: str | None = None) -> list[str]:
    """Where something is mounted in this process's root, as /proc/self/mountinfo lists them (its
    fifth field, with space, tab, newline and backslash written as octal escapes)."""
    if mountinfo is None:
        with open("/proc/self/mountinfo") as f:
            mountinfo = f.read()
    points = [line.split()[4] for line in mountinfo.splitlines() if line.strip()]
    # (only a point with an escape goes through the substitution: ~9 µs each, in every container's start)
    return [_OCTAL.sub(_unescape, p) if "\\" in p else p for p in points]


_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(m: re.Match[str]) -> str:
    return chr(int(m.group(1), 8))


def outermost(points: list[str]) -> list[str]:
    """Mount points not below another one of them (a recursive bind of those carries the rest)."""
    out: list[str] = []
    for p in sorted(set(points) - {"/"}):
        if not any(p.startswith(o.rstrip("/") + "/") for o in out):
            out.append(p)
    return out


def scratch_dir(points: list[str]) -> str:
    for d in SCRATCH_DIRS:
        if os.path.isdir(d) and not os.path.islink(d) and not any(p == d or p.startswith(d + "/") for p in points):
            return d
    raise OSError(f"none of {', '.join(SCRATCH_DIRS)} is a plain directory to assemble the container's root on")


def private_root() -> None:
    """Give this process a root of its own over the current one (see the module docstring)."""
    _call(_lib().unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing done here reaches the template's namespace
    points = mount_points()
    scratch = scratch_dir(points)
    _mount("homeport-container", scratch, "tmpfs", 0, "mode=0755")
    for d in ("upper", "work", "root"):
        os.mkdir(os.path.join(scratch, d))
    root = os.path.join(scratch, "root")
    _mount("homeport-container", root, "overlay", 0, f"lowerdir=/,upperdir={scratch}/upper,workdir={scratch}/work")
    for point in outermost(points):
        _mount(point, root + point, None, MS_BIND | MS_REC)
    os.chroot(root)
    os.chdir("/")


def probe(attempt: Callable[[], object] | None = None, fork: Callable[[], int] = os.fork) -> str | None:
    """Whether `attempt` (`private_root`) works here: None, or why not (tried in a child made by `fork`,
    which then exits)."""
    r, w = os.pipe()
    pid = fork()
    if pid == 0:
        os.close(r)
        code = 0
        try:
            (attempt or private_root)()
        except BaseException as exc:  # reported to the parent, whatever it is
            os.write(w, f"{type(exc).__name__}: {exc}".encode(errors="replace"))
            code = 1
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        reason = f.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        return reason or f"the probe exited with status {status}"
    return None
