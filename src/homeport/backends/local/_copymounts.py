"""The paths a container forked from a memory snapshot keeps in view, made here for its own host user.

A memory snapshot's template runs the user's code, so it is no longer host root when it forks; each
of its copies becomes a host user of its own (`homeport.runtime._copyusers`), and only host root may
make the idmapped mounts through which such a user sees host root's files as its own (its scratch
directory and its own entry of the web sockets' directory, writable; its volumes; the control plane's
socket; the web sockets' directory and the image environments, read-only). So the backend makes them,
per fork: detached copies of those paths (open_tree), idmapped for the copy's user (mount_setattr),
passed with the fork request (SCM_RIGHTS) for the copy to mount at their paths.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any

from ... import _mountapi
from ..._protocol import templates as T


class CopyMounts:
    """Idmapped mounts for copies of memory snapshots; one user namespace per host user, kept."""

    def __init__(self) -> None:
        self._userns: dict[int, int] = {}  # host user -> a user namespace whose root is that user

    def make(self, uid: int, needed: Sequence[Sequence[Any]],
             sources: dict[str, str] | None = None) -> tuple[list[str], list[int]]:
        """The paths of `needed` ([path, writable]) and, in that order, a descriptor of an idmapped
        detached copy of each (read-only but where writable), for host user `uid` (the caller closes
        them): as a container's own copies are elsewhere (a directory of host root's, such as the web
        sockets', is its own to pass). `sources`: where a path of the copy's view (a volume's target,
        under bubblewrap) is on the host, where it is not the same path. OSError where one cannot be made."""
        sources = {t.rstrip("/") or "/": s for t, s in (sources or {}).items()}
        writable: dict[str, bool] = {}
        for p, rw in needed:
            if p and os.path.exists(sources.get(p.rstrip("/") or "/", p)):
                key = p.rstrip("/") or "/"
                writable[key] = writable.get(key, False) or bool(rw)
        paths = sorted(writable)
        if len(paths) > T.MAX_FDS:
            raise OSError(f"a container of a memory snapshot keeps at most {T.MAX_FDS} paths in view")
        userns = self._userns.get(uid)
        if userns is None:
            userns = self._userns[uid] = _mountapi.idmap_namespace(uid)
        fds: list[int] = []
        try:
            for path in paths:
                fd, _recursive = _mountapi.open_tree(sources.get(path, path))
                fds.append(fd)
                _mountapi.mount_setattr(fd, _mountapi.MOUNT_ATTR_IDMAP | (0 if writable[path] else _mountapi.MOUNT_ATTR_RDONLY),
                                  userns)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return paths, fds

    def close(self) -> None:
        for fd in self._userns.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._userns.clear()


__all__ = ["CopyMounts"]
