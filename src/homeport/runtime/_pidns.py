"""PID namespaces of containers and templates: a container forked into one of its own
(`fork_in_new_pid_namespace`), a template that becomes process 1 of its own (`become_pid_one`, with a
/proc mounted as host root by `proc_mounter` so that its mounts are locked in its view, or
`enter_own_pid_namespace` when the control plane is not root), and how a process learns its host pid.
See `_isolate` for how these fit into a container's isolation.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable

from ._mountns import CLONE_NEWNS, _call, _lib, _mount

CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
PR_SET_PDEATHSIG = 1


_own_pid_ns = -1


def pid_namespaces_work() -> str | None:
    """None if this process can fork children into PID namespaces of their own, else why not. Tried
    in a throw-away child: a process that made a namespace for its children and cannot leave it again
    (setns needs privilege over its own namespace) could fork nothing more."""
    global _own_pid_ns
    _own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    r, w = os.pipe()
    tester = os.fork()
    if tester == 0:  # never returns
        try:
            os.close(r)
            pid = fork_in_new_pid_namespace()
            if pid == 0:
                os._exit(0 if os.getpid() == 1 else 3)
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                raise OSError("a child was not process 1 of its namespace")
        except BaseException as exc:
            os.write(w, f"{exc}".encode(errors="replace") or b"failed")
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        reason = f.read().decode(errors="replace")
    os.waitpid(tester, 0)
    return reason or None


def fork_in_new_pid_namespace() -> int:
    """os.fork(), the child as process 1 of a PID namespace of its own (`pid_namespaces_work` first)."""
    _call(_lib().unshare(CLONE_NEWPID), "unshare(CLONE_NEWPID)")
    try:
        pid = os.fork()
    except BaseException:
        _lib().setns(_own_pid_ns, CLONE_NEWPID)
        raise
    if pid == 0:
        os.close(_own_pid_ns)
    else:  # the parent: its next children are in its own namespace again
        _call(_lib().setns(_own_pid_ns, CLONE_NEWPID), "setns(CLONE_NEWPID)")
    return pid


def become_pid_one(flags: int = CLONE_NEWPID) -> int | None:
    """Go on as process 1 of a new PID namespace (unshare(`flags`), then fork): the child returns; the
    parent only waits for it and leaves with its exit status (the child dies with the parent, which
    its supervisor kills). The child's pid as the host sees it, if it can tell (read before a /proc of
    its own is mounted)."""
    _call(_lib().unshare(flags), f"unshare({flags:#x})")
    pid = os.fork()
    if pid != 0:  # never returns
        code = 1
        try:
            os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # a copy of the template's socket would hide its exit
            while True:  # (reaping any other child, such as `proc_mounter`'s helper)
                done, status = os.waitpid(-1, 0)
                if done == pid:
                    break
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code
        finally:
            os._exit(code)
    _lib().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    return host_pid()


def proc_mounter() -> Callable[[], None]:
    """Prepare, as host root, a /proc that its user namespace does not own, for this process's PID
    namespace to come: a helper is forked now, still host root. The function returned (called by
    process 1 of a PID namespace that this process's user namespace owns, `become_pid_one`, still in
    the mount namespace `isolate` made as host root) has the helper enter its mount and PID namespaces
    and mount that namespace's /proc there as host root, then copies every mount into a mount namespace
    of its own, owned by its user namespace: the kernel locks them all in place, so that no snap hook
    can unmount /proc (or a cover) to see the host's processes beneath. The PID namespace stays its
    user namespace's, which can still leave a namespace made for a child (`fork_in_new_pid_namespace`)."""
    ask_r, ask_w = os.pipe()
    done_r, done_w = os.pipe()
    helper = os.fork()
    if helper == 0:  # never returns
        try:
            os.closerange(3, min(ask_r, done_w))  # (the template's socket among them: see `become_pid_one`)
            os.closerange(min(ask_r, done_w) + 1, max(ask_r, done_w))
            os.closerange(max(ask_r, done_w) + 1, os.sysconf("SC_OPEN_MAX"))
            seen = os.read(ask_r, 32)
            if seen.isdigit():
                pidns = os.open(f"/proc/{int(seen)}/ns/pid", os.O_RDONLY)
                mntns = os.open(f"/proc/{int(seen)}/ns/mnt", os.O_RDONLY)
                _call(_lib().setns(mntns, CLONE_NEWNS), "setns(CLONE_NEWNS)")
                _call(_lib().setns(pidns, CLONE_NEWPID), "setns(CLONE_NEWPID)")
                child = os.fork()
                if child == 0:  # never returns: in that PID namespace, whose /proc it mounts
                    code = 1
                    try:
                        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
                        code = 0
                    finally:
                        os._exit(code)
                _, status = os.waitpid(child, 0)
                if os.waitstatus_to_exitcode(status) == 0:
                    os.write(done_w, b"ok")
        finally:
            os._exit(0)
    os.close(ask_r)
    os.close(done_w)
    open_fds = [ask_w, done_r]

    def close() -> None:  # once (the helper leaves when it reads nothing more)
        while open_fds:
            with contextlib.suppress(OSError):
                os.close(open_fds.pop())

    def mount_proc() -> None:
        try:
            seen = host_pid()
            if seen is None:
                raise OSError("this process's host pid is unknown")
            os.write(ask_w, str(seen).encode())
            if os.read(done_r, 2) != b"ok":
                raise OSError("the helper could not mount a /proc for this PID namespace")
        finally:
            close()
        _call(_lib().unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")

    mount_proc.close = close  # type: ignore[attr-defined]
    return mount_proc


def enter_own_pid_namespace() -> int | None:
    """Go on as process 1 of a new PID namespace and a new mount namespace, both owned by this
    process's user namespace, with a /proc of that PID namespace: a snapshot template, which runs the
    user's code, sees no host process, and can still fork each container into a PID namespace of its
    own (`fork_in_new_pid_namespace` leaves one for a namespace its user namespace owns). Used where the
    control plane is not root (its user namespace owns that /proc: the snap hooks could unmount it, and
    see only what its user sees anyway); as root, `_copyusers.isolate_snapshot` has it mounted as host
    root, locked (`proc_mounter`). Its pid as the host sees it, if it can tell (`become_pid_one`)."""
    seen = become_pid_one(CLONE_NEWNS | CLONE_NEWPID)
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    return seen


def try_own_pid_namespace() -> str | None:
    """`enter_own_pid_namespace` where it works (tried first in a throw-away child), with the host pid
    in the environment: a snapshot template the control plane could not make another user (it is not
    root) still becomes process 1 of a PID namespace of its own, owned by the user namespace it made,
    so that its snap hooks and its containers see no host process. None, or why not."""
    from .. import _protocol as P
    from ._mountns import probe

    problem = probe(enter_own_pid_namespace)
    if problem is None:
        host = enter_own_pid_namespace()
        if host is not None:
            os.environ[P.ENV_HOST_PID] = str(host)
    return problem


def host_pid() -> int | None:
    """This process's pid as the host sees it, read before its own /proc is mounted."""
    with contextlib.suppress(OSError, ValueError):
        return int(os.readlink("/proc/self"))
    return None
