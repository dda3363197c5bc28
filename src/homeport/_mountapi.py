"""Linux's new mount API (open_tree, mount_setattr, move_mount) and the user namespaces that make a
mount idmapped, through ctypes (Python 3.11's `os` has none of them; syscall numbers of x86-64 and
arm64, where they are the same). Below both the runtime, where a container makes its own view
(`runtime._isolate`, `runtime._newroot`), and the local backend, which makes idmapped copies of paths
for the containers of a memory snapshot (`backends.local._copymounts`): stdlib only, no state but the
C library handle.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import signal
import struct
from typing import Any

CLONE_NEWUSER = 0x10000000
HELPER_SECONDS = 10.0  # how long `idmap_namespace` waits for its helper to make the namespace
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_IDMAP = 0x100000

_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.unshare.argtypes = [ctypes.c_int]
    return _libc


def syscall(number: int, *args: Any) -> int:
    lib = _lib()
    return lib.syscall(ctypes.c_long(number), *args)


def idmap_text(uid: int, others: bool | int) -> str:
    """`0 <uid> 1`; with `others` True also ids 1-65535 mapped to themselves (but `uid`); with an int,
    ids 1-65535 mapped to `others`, `others` + 1 ... (a container's own subordinate ids)."""
    lines = [f"0 {uid} 1"]
    if others is True:
        for lo, hi in ((1, min(uid, 65536)), (max(uid + 1, 1), 65536)):
            if hi > lo:
                lines.append(f"{lo} {lo} {hi - lo}")
    elif others:
        lines.append(f"1 {others} 65535")
    return "\n".join(lines) + "\n"


def idmap_namespace(uid: int, others: bool | int = False) -> int:
    """A descriptor of a user namespace in which root is host user `uid`: what makes a mount idmapped
    (host root's files look like `uid`'s). Made by a child that enters it and is then killed.
    `others` (`idmap_text`): how an image's other ids (1-65535) map: to a container's own subordinate
    ids (so that they are its users' ids inside), or to themselves (so that files of theirs, such as
    the shadow group's, stay within reach of the overlay that reads them: the kernel's override of
    permissions needs both owner and group mapped)."""
    lib = _lib()  # loaded before the fork: the child of a process with threads must not load a library
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # never returns
        try:
            os.close(r)
            ok = lib.unshare(CLONE_NEWUSER) == 0
            # its pid in /proc (a container's own /proc is not mounted yet: the host's numbers, not fork's)
            os.write(w, os.readlink("/proc/self").encode() if ok else b"0")
            while True:  # until killed
                signal.pause()
        finally:
            os._exit(1)
    os.close(w)
    try:
        # Bounded: a helper stuck at birth must not hold its caller (the control plane's loop) for ever.
        ready, _, _ = select.select([r], [], [], HELPER_SECONDS)
        seen = os.read(r, 32) if ready else None
        os.close(r)
        if seen is None:
            raise OSError(f"the helper making a user namespace did not answer within {HELPER_SECONDS:g} s")
        if not seen.isdigit() or seen == b"0":
            raise OSError("unshare(CLONE_NEWUSER) failed in the helper")
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{int(seen)}/{name}", "w") as f:
                f.write(idmap_text(uid, others))
        return os.open(f"/proc/{int(seen)}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
        os.waitpid(pid, 0)


def open_tree(path: str) -> tuple[int, int]:
    """A detached copy of the mount at `path`, and AT_RECURSIVE where it had to take the mounts below
    with it: in a user namespace (a container of an isolated snapshot) a copy may not leave out mounts
    that its namespace's creator locked in place (the kernel answers EINVAL)."""
    for recursive in (0, AT_RECURSIVE):
        fd = syscall(SYS_OPEN_TREE, ctypes.c_int(AT_FDCWD), os.fsencode(path),
                      ctypes.c_uint(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | recursive))
        if fd >= 0:
            return fd, recursive
        err = ctypes.get_errno()
        if err != errno.EINVAL or recursive:
            break
    raise OSError(err, f"open_tree {path}: {os.strerror(err)}")


def mount_setattr(fd: int, attr_set: int, userns: int = 0, recursive: int = 0) -> None:
    attr = ctypes.create_string_buffer(struct.pack("QQQQ", attr_set, 0, 0, userns))
    rc = syscall(SYS_MOUNT_SETATTR, ctypes.c_int(fd), b"", ctypes.c_uint(AT_EMPTY_PATH | recursive), attr,
                  ctypes.c_size_t(32))
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount_setattr: {os.strerror(err)}")


def move_mount(fd: int, path: str) -> None:
    rc = syscall(SYS_MOVE_MOUNT, ctypes.c_int(fd), b"", ctypes.c_int(AT_FDCWD), os.fsencode(path),
                  ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH))
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"move_mount {path}: {os.strerror(err)}")
