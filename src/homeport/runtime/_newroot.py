"""A container in a root file system image, as an unprivileged user of its own (not host root).

An image built with `apt_install`/`run_commands` is a Debian tree: read-only layers owned by host
root. Its container runs in a root of its own assembled from them, then becomes the container's
unprivileged host user `uid`, root only in a user namespace of its own (/proc/self/uid_map:
`0 <uid> 1`), in a PID namespace of its own:

- **Layers idmapped.** Each image layer is bound *idmapped* (mount_setattr MOUNT_ATTR_IDMAP): host
  root's files look like `uid`'s, so the container's root owns its image as in Modal (it may write
  anywhere in it); the files on disk stay host root's and unchanged. An overlay whose upper layer is a
  fresh tmpfs (owned by `uid`) takes its writes: they are its own and vanish with it. (An overlay itself
  cannot be idmapped; its layers can.)
- **Binds.** Its volumes and other writable binds are idmapped the same way (what it writes lands as
  host root's, as before); read-only ones stay read-only; of the shared web socket directory a
  web container sees only its own `<dir>/<container id>` (`own`).
- **pivot_root, not chroot.** The old root is detached, so nothing of the host is left in view, and a
  process under chroot could not make a user namespace (the kernel refuses CLONE_NEWUSER there).

Two callers:
- A container started afresh: the local backend runs `main` (with `python -I -S`, not importing the
  `homeport` package itself: `backends.local._rootfs._BOOT`) under `unshare --mount --pid --fork`; it assembles the root from the host's paths,
  drops to `uid` and execs ARGV.
- A template of the image (`SPEC["template"]`: it stays host root, runs no user code, and gets the plain
  layers) keeps the layers bound at `LAYERS` in its view, and each container forked from it (into a
  PID namespace of its own) assembles its own root from them (`from_template`) before it runs anything.

Python 3.11's `os` has no mount(), pivot_root() or the new mount API: they are called through ctypes
(`_mountns`, `_isolate`).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from .. import _mountapi
from . import _isolate
from ._mountns import CLONE_NEWNS, MS_BIND, MS_PRIVATE, MS_REC, _call, _lib, _mount, mount_points

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MNT_DETACH = 2
SYS_PIVOT_ROOT = 155 if os.uname().machine == "x86_64" else 41
# In a template's view: its image's layers (read-only, `<LAYERS>/<n>`, top first), and where each of its
# containers mounts the tmpfs it assembles its own root on.
HOME = "/.homeport"
LAYERS = HOME + "/layers"
SCRATCH = HOME + "/scratch"
_SKIP = (HOME, "/proc", "/sys", "/dev")  # a forked container's root gets these afresh


def _pivot(root: str) -> None:
    """Make `root` (a mount point) this mount namespace's root and drop the old one from view."""
    os.chdir(root)
    lib = _lib()
    if lib.syscall(ctypes.c_long(SYS_PIVOT_ROOT), b".", b".") != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"pivot_root {root}: {os.strerror(err)}")
    _call(lib.umount2(b".", MNT_DETACH), "umount the old root")
    os.chdir("/")


def _point(path: str, directory: bool, uid: int | None) -> None:
    """A mount point at `path` (inside the new root), the directories made on the way owned by `uid`."""
    made = []
    parent = os.path.dirname(path)
    while parent and not os.path.lexists(parent):
        made.append(parent)
        parent = os.path.dirname(parent)
    for d in reversed(made):
        os.mkdir(d, 0o755)
    if directory:
        if not os.path.isdir(path):
            os.mkdir(path, 0o755)
            made.append(path)
    elif not os.path.lexists(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
        made.append(path)
    if uid is not None:
        for d in made:
            os.lchown(d, uid, uid)


def _bind(src: str, dst: str, writable: bool, idmap: int, uid: int | None) -> None:
    """Bind `src` at `dst`: writable and idmapped (where `idmap` >= 0), or read-only."""
    if not os.path.lexists(src):
        return
    _point(dst, os.path.isdir(src), uid)
    fd, recursive = _mountapi.open_tree(src)
    try:
        if writable and idmap >= 0:
            _mountapi.mount_setattr(fd, _mountapi.MOUNT_ATTR_IDMAP, idmap)
        elif not writable:
            _mountapi.mount_setattr(fd, _mountapi.MOUNT_ATTR_RDONLY, recursive=recursive or _mountapi.AT_RECURSIVE)
        _mountapi.move_mount(fd, dst)
    finally:
        os.close(fd)


def _dev(root: str, dev: str) -> None:
    """/dev: the host's ("-"), or only these '/'-separated entries (`name`, or `name>link`)."""
    target = root + "/dev"
    _point(target, True, None)
    if dev == "-":
        _mount("/dev", target, None, MS_BIND | MS_REC)
        return
    _mount("homeport-dev", target, "tmpfs", MS_NOSUID, "mode=0755")
    for entry in dev.split("/"):
        if not entry:
            continue
        name, _, link = entry.partition(">")
        if link:
            os.symlink(link, f"{target}/{name}")
            continue
        src = f"/dev/{name}"
        if os.path.isdir(src):
            os.makedirs(f"{target}/{name}", exist_ok=True)
        else:
            os.close(os.open(f"{target}/{name}", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
        _mount(src, f"{target}/{name}", None, MS_BIND | MS_REC)


def assemble(scratch: str, layers: Sequence[str], uid: int | None, binds: Sequence[Sequence[Any]],
             dev: str = "-", first: int | None = None) -> tuple[str, int]:
    """Assemble a root on a fresh tmpfs at `scratch` (in this process's own mount namespace): an overlay
    of `layers` (top first; idmapped to `uid` where it is not None) with a writable tmpfs layer, /dev,
    /proc (of this PID namespace), /sys read-only, the current /etc/resolv.conf and /etc/hosts copied,
    and `binds` ([src, dst, writable]). `first`: the host id of the image's id 1 (`drop`). Its path,
    and (with `first`) the user namespace its layers are idmapped with, for `drop` to enter (else -1)."""
    _mount("homeport-container", scratch, "tmpfs", 0, "mode=0755")
    idmap = _mountapi.idmap_namespace(uid, first or True) if uid is not None else -1
    kept = False
    try:
        lower = []
        for i, layer in enumerate(layers):
            if idmap < 0:
                lower.append(layer)
                continue
            path = f"{scratch}/l{i}"
            os.mkdir(path)
            fd, _rec = _mountapi.open_tree(layer)
            try:
                _mountapi.mount_setattr(fd, _mountapi.MOUNT_ATTR_IDMAP | _mountapi.MOUNT_ATTR_RDONLY, idmap)
                _mountapi.move_mount(fd, path)
            finally:
                os.close(fd)
            lower.append(path)
        for d in ("upper", "work", "root"):
            os.mkdir(f"{scratch}/{d}", 0o755)
        if uid is not None:
            os.chown(f"{scratch}/upper", uid, uid)
        root = f"{scratch}/root"
        _mount("homeport-root", root, "overlay", 0,
               f"lowerdir={':'.join(lower)},upperdir={scratch}/upper,workdir={scratch}/work")
        _dev(root, dev)
        _point(root + "/proc", True, uid)
        _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        if os.path.isdir("/sys"):
            _bind("/sys", root + "/sys", False, -1, uid)
        _point(root + "/tmp", True, uid)
        for name in ("resolv.conf", "hosts"):
            src = f"/etc/{name}"
            if os.path.isfile(src):
                dst = f"{root}/etc/{name}"
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(dst)
                with open(src, "rb") as f, open(dst, "wb") as g:
                    g.write(f.read())
                if uid is not None:
                    os.chown(dst, uid, uid)
        for src, dst, writable in sorted(binds, key=lambda b: b[1].count("/")):
            _bind(src, root + dst, bool(writable), idmap, uid)
        kept = first is not None
    finally:
        if idmap >= 0 and not kept:
            os.close(idmap)
    return root, idmap if kept else -1


def drop(uid: int, userns: int = -1) -> None:
    """Become host user `uid`, root only in a user namespace of its own. `userns`: the namespace its
    layers are idmapped with (`assemble`), which maps ids 1-65535 to its own subordinate ids too (an
    image's users, `runuser -u alice`, are users of its own): it enters that one (host root may), so the
    ids on its volumes are the ids it sees. Else a namespace mapping only its root (`_isolate`'s last
    step)."""
    if userns < 0:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        _lib().prctl(_isolate.PR_SET_DUMPABLE, 1, 0, 0, 0)
        _isolate._user_namespace(f"0 {uid} 1", f"0 {uid} 1")
        return
    try:
        _call(_lib().setns(userns, _isolate.CLONE_NEWUSER), "setns(CLONE_NEWUSER)")
    finally:
        os.close(userns)
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    os.setgroups([])


def _enter(cwd: str) -> None:
    with contextlib.suppress(OSError):  # an image's workdir exists in it, as in a Dockerfile
        os.makedirs(cwd, exist_ok=True)
    try:
        os.chdir(cwd)
    except OSError:
        os.chdir("/")


def template_layers(spec: dict[str, Any], root: str) -> None:
    """In a template's root: its image's layers, read-only at `LAYERS/<n>`, and `SCRATCH` for its containers."""
    _point(root + HOME, True, None)
    _mount("homeport-layers", root + HOME, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700")
    os.mkdir(root + SCRATCH, 0o700)
    for i, layer in enumerate(spec["lower"]):
        _bind(layer, f"{root}{LAYERS}/{i}", False, -1, None)


def loopback_up() -> None:
    """Bring up `lo` in a fresh network namespace (`unshare --net` leaves it down; bubblewrap does not),
    before user code binds 127.0.0.1."""
    import fcntl
    import socket
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s, siocgifflags, req))[1]
        if not flags & iff_up:
            fcntl.ioctl(s, siocsifflags, struct.pack("16sh", b"lo", flags | iff_up))


def main(argv: Sequence[str]) -> None:
    """`python -m homeport.runtime._newroot SPEC -- ARGV` (see the module docstring). SPEC: {"lower",
    "scratch", "cwd", "dev", "mounts": [[src, dst, writable]], "uid", "first", "template", "net"}."""
    spec = json.loads(argv[0])
    command = list(argv[2:])
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    template = bool(spec.get("template"))
    uid = None if template else spec.get("uid")
    first = spec.get("first")
    try:
        root, userns = assemble(spec["scratch"], spec["lower"], uid, spec.get("mounts") or (), spec.get("dev") or "-",
                                first)
    except OSError as exc:  # as before, rather than not at all: said in its log
        if uid is None:
            raise
        print(f"homeport: this container runs as root in its own root: it could not become a user of its own "
              f"({exc})", file=sys.stderr)
        uid = None
        root, userns = assemble(spec["scratch"], spec["lower"], None, spec.get("mounts") or (), spec.get("dev") or "-")
    if template:
        template_layers(spec, root)
    if spec.get("net"):  # a network of its own (`unshare --net`), whose loopback only host root may bring up
        loopback_up()
    _pivot(root)
    if uid is not None:
        drop(int(uid), userns)
    _enter(spec.get("cwd") or "/")
    os.environ["TMPDIR"] = "/tmp"
    os.execvp(command[0], command)


def from_template(uid: int, own: Sequence[str] = (), hidden: Sequence[str] = ()) -> None:
    """In a container forked from a template of its image (process 1 of its own PID namespace, host root
    in the template's namespaces): a root of its own, assembled from the layers the template keeps at
    `LAYERS`, with what the template has mounted in its root bound again (writable ones idmapped) but
    for `hidden` (the shared web socket directory), and `own` (its own entry there) writable; then it
    becomes `uid` (see the module docstring)."""
    _call(_lib().unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    with open("/proc/self/mountinfo") as f:
        info = f.read()
    points = mount_points(info)
    writable = {}
    for point, line in zip(points, info.splitlines()):
        writable[point] = "rw" in line.split()[5].split(",")
    layers = sorted(os.listdir(LAYERS), key=int)
    binds: list[list[Any]] = []
    for point in sorted(set(points) - {"/"}, key=lambda p: p.count("/")):
        if any(point == s or point.startswith(s + "/") for s in (*_SKIP, *hidden)):
            continue
        binds.append([point, point, writable.get(point, False)])
    binds += [[p, p, True] for p in own if os.path.exists(p)]
    from .._protocol import subordinate_ids  # (the template has it imported)

    first = subordinate_ids(uid)
    root, userns = assemble(SCRATCH, [f"{LAYERS}/{n}" for n in layers], uid, binds, first=first)
    _pivot(root)
    drop(uid, userns)


# --- a template of the image, and each container forked from it ---------------------------------------


def prepare_template(uid: int) -> tuple[dict[str, Any] | None, str | None]:
    """In a template of a root file system image: get ready to fork containers that each assemble a
    root of their own and become an unprivileged user of their own (`from_template`, tried first in a
    throw-away child, in a PID namespace of its own where the machine allows). ({"uid", "pidns"}, None),
    or (None, why not)."""
    from ._mountns import probe

    pid_problem = _isolate.pid_namespaces_work()

    def attempt() -> None:
        from_template(uid)
        if open("/proc/self/uid_map").read().split()[:2] != ["0", str(uid)]:
            raise OSError("the user namespace did not map root to the container's user")

    problem = probe(attempt, os.fork if pid_problem else _isolate.fork_in_new_pid_namespace)
    return (None, problem) if problem is not None else ({"uid": uid, "pidns": not pid_problem}, None)


def enter_from_template(cid: str, uid: int, pidns: bool) -> None:
    """Make this copy (container `cid`, forked from a template of its image) a container with a root
    and a user (`uid`) of its own (`from_template`), or leave without running the user's code."""
    from .. import _protocol as P

    host_pid = _isolate.host_pid()  # read before it mounts a /proc of its own
    if host_pid is not None and pidns:
        os.environ[P.ENV_HOST_PID] = str(host_pid)
    web = os.path.dirname(os.environ.get(P.ENV_WEB_SOCKET) or "")
    own = [web] if web and os.path.basename(web) == cid else []  # its web sockets' own directory
    try:
        from_template(uid, own, [os.path.dirname(web)] if own else [])
    except OSError as exc:
        print(f"homeport: this container could not get a root of its own ({exc}); it does not start", file=sys.stderr)
        raise SystemExit(1) from None
