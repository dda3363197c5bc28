"""File operations confined to one directory, whatever a container put in it.

A volume is written by containers, which may plant symbolic links (`t -> ../../token`), FIFOs and
directories in it. The control plane reads and writes the same tree on the host, so none of its
operations may follow a link: every path is opened beneath the volume's root without following any
symbolic link, with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` where the kernel has it (5.6+)
and otherwise by walking the path one component at a time with `O_NOFOLLOW` and directory file
descriptors. The last component is always handled through its parent's descriptor (`lstat`,
`unlinkat`, `renameat`, `O_NOFOLLOW` opens), so a link is seen as what it is, a link, and never as its
target. Files are opened `O_NONBLOCK` and checked to be regular before they are read, so a FIFO
cannot stall the control plane.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import PurePosixPath

from ..exception import InvalidError, NotFoundError

_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_SYS_OPENAT2 = 437  # the same number on every Linux architecture (it came after the syscall table unification)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = None
_have_openat2: bool | None = None


def _openat2(dir_fd: int, path: str, flags: int) -> int | None:
    """The descriptor, or None where the kernel (or a seccomp filter) has no openat2."""
    global _libc, _have_openat2
    if _have_openat2 is False:
        return None
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
        except OSError:
            _have_openat2 = False
            return None
    how = _OpenHow(flags, 0, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS)
    fd = _libc.syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dir_fd), ctypes.c_char_p(os.fsencode(path)),
                       ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd >= 0:
        _have_openat2 = True
        return fd
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EPERM) and not _have_openat2:
        _have_openat2 = False
        return None
    if err == errno.EAGAIN:  # a concurrent rename raced the lookup: the walk below is as safe
        return None
    raise OSError(err, os.strerror(err), path)


def split(path: str) -> list[str]:
    """A volume path as its components: leading "/" and "." dropped; ".." refused."""
    if not isinstance(path, str) or "\0" in path:
        raise InvalidError(f"Invalid volume path: {path!r}")
    parts = [p for p in PurePosixPath("/" + path.lstrip("/")).parts[1:] if p not in ("", ".")]
    if ".." in parts:
        raise InvalidError(f"Volume paths may not contain '..': {path!r}")
    return parts


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _error(exc: OSError, path: str, where: str) -> Exception:
    if exc.errno in (errno.ELOOP, errno.EXDEV):
        return InvalidError(f"{path}: the path goes through a symbolic link in {where}; volume operations "
                            "never follow symbolic links")
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return NotFoundError(f"No such file or directory in {where}: {path}")
    return exc


class Root:
    """One directory, as a descriptor that every operation starts from. Use as a context manager."""

    def __init__(self, path: str, where: str) -> None:
        self.where = where  # for messages: "volume 'x'"
        self.fd = os.open(path, _DIR_FLAGS)

    def __enter__(self) -> Root:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)

    # --- resolution --------------------------------------------------------------------------------
    def open_dir(self, parts: list[str], path: str, create: bool = False) -> int:
        """A descriptor of the directory `parts` beneath the root (made when `create`); the caller closes it."""
        if not parts:
            return os.dup(self.fd)
        if not create:
            try:
                fd = _openat2(self.fd, "/".join(parts), _DIR_FLAGS)
            except OSError as exc:
                if exc.errno != errno.ENOTDIR:  # a link as the last component: the walk says so exactly
                    raise _error(exc, path, self.where) from None
                fd = None
            if fd is not None:
                return fd
        fd = os.dup(self.fd)
        try:
            for part in parts:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o755, dir_fd=fd)
                try:
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno == errno.ENOTDIR and _is_link(fd, part):  # O_NOFOLLOW|O_DIRECTORY on a link
                        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), part) from None
                    raise
                os.close(fd)
                fd = nxt
        except OSError as exc:
            os.close(fd)
            raise _error(exc, path, self.where) from None
        return fd

    @contextlib.contextmanager
    def parent(self, path: str, create: bool = False) -> Iterator[tuple[int, str]]:
        """(descriptor of the parent directory, last component) of `path`; the root itself is refused."""
        parts = split(path)
        if not parts:
            raise InvalidError(f"{path!r} is the volume's root, not a file")
        fd = self.open_dir(parts[:-1], path, create)
        try:
            yield fd, parts[-1]
        finally:
            os.close(fd)

    def lstat(self, path: str) -> os.stat_result:
        parts = split(path)
        if not parts:
            return os.fstat(self.fd)
        with self.parent(path) as (fd, name):
            try:
                return os.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError as exc:
                raise _error(exc, path, self.where) from None

    def exists(self, path: str) -> bool:
        try:
            self.lstat(path)
        except NotFoundError:
            return False
        return True

    # --- reading -----------------------------------------------------------------------------------
    def open_file(self, path: str) -> int:
        """A read descriptor of the regular file at `path` (never a link, a FIFO or a device)."""
        with self.parent(path) as (dfd, name):
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
            except OSError as exc:
                raise _error(exc, path, self.where) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise NotFoundError(f"No such file in {self.where}: {path} (it is not a regular file)")
        return fd

    def read(self, path: str, offset: int, length: int | None) -> bytes:
        fd = self.open_file(path)
        try:
            with os.fdopen(fd, "rb", closefd=False) as f:
                f.seek(offset)
                return f.read(-1 if length is None else length)
        finally:
            os.close(fd)

    def scan(self, dir_fd: int, rel: str, recursive: bool) -> Iterator[tuple[str, os.stat_result]]:
        """(path relative to the root, lstat) of what is in the directory; links are entries, not followed."""
        with os.scandir(dir_fd) as it:
            entries = sorted((e.name, e.stat(follow_symlinks=False)) for e in it)
        for name, st in entries:
            path = f"{rel}/{name}" if rel else name
            yield path, st
            if recursive and stat.S_ISDIR(st.st_mode):
                try:
                    sub = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
                except OSError:  # replaced (by a link, say) since it was listed
                    continue
                try:
                    yield from self.scan(sub, path, recursive)
                finally:
                    os.close(sub)

    # --- writing -----------------------------------------------------------------------------------
    def write(self, path: str, data: bytes) -> None:
        """Write `data` to a temporary name and rename it into place (a link there is replaced, not followed)."""
        with self.parent(path, create=True) as (dfd, name):
            tmp = f".{name[:200]}.{secrets.token_hex(4)}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dfd)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dfd)
                raise

    def remove(self, path: str, recursive: bool) -> None:
        with self.parent(path) as (dfd, name):
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    if not recursive:
                        raise InvalidError(f"{path} is a directory; pass recursive=True (or -r) to remove it.")
                    rmtree_at(dfd, name)
                else:
                    os.unlink(name, dir_fd=dfd)  # a link is removed itself
            except OSError as exc:
                raise _error(exc, path, self.where) from None

    def copy(self, src: str, dest_dir: list[str], dest_name: str) -> None:
        """Copy the file, link or (recursively) directory at `src` to `dest_name` in the directory
        `dest_dir`; links are copied as links. The source tree is listed before anything is written,
        so copying a directory into itself terminates."""
        src_parts = split(src)
        st = self.lstat(src)
        if src_parts:
            with self.parent(src) as (sfd, sname):
                tree = [("", st)]
                if stat.S_ISDIR(st.st_mode):
                    sub = os.open(sname, _DIR_FLAGS, dir_fd=sfd)
                    try:
                        tree += list(self.scan(sub, "", True))
                    finally:
                        os.close(sub)
        else:
            tree = [("", st), *self.scan(self.fd, "", True)]
        base = "/".join(src_parts)
        dest = "/".join([*dest_dir, dest_name])
        for rel, st in tree:
            s = f"{base}/{rel}" if rel and base else (rel or base)
            d = f"{dest}/{rel}" if rel else dest
            if stat.S_ISDIR(st.st_mode):
                fd = self.open_dir(split(d), d, create=True)
                os.close(fd)
            elif stat.S_ISLNK(st.st_mode):
                with self.parent(s) as (sfd, sname):
                    target = os.readlink(sname, dir_fd=sfd)
                with self.parent(d, create=True) as (dfd, dname):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(dname, dir_fd=dfd)
                    os.symlink(target, dname, dir_fd=dfd)
            elif stat.S_ISREG(st.st_mode):
                self._copy_file(s, d)
            # FIFOs, sockets and devices are not copied

    def _copy_file(self, src: str, dest: str) -> None:
        fd = self.open_file(src)
        try:
            with self.parent(dest, create=True) as (dfd, name):
                tmp = f".{name[:200]}.{secrets.token_hex(4)}.tmp"
                out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                              dir_fd=dfd)
                try:
                    with os.fdopen(out, "wb") as w, os.fdopen(os.dup(fd), "rb") as r:
                        while chunk := r.read(1 << 20):
                            w.write(chunk)
                    os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp, dir_fd=dfd)
                    raise
        finally:
            os.close(fd)


def rmtree_at(dir_fd: int, name: str) -> None:
    """Remove the directory `name` in `dir_fd` and what is in it, never following a link."""
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        with os.scandir(fd) as it:
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        for child, is_dir in entries:
            if is_dir:
                rmtree_at(fd, child)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(child, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)


def entry_type(mode: int) -> str:
    """The `FileEntryType` value (as the SDK names it) of a file mode."""
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "unspecified"
