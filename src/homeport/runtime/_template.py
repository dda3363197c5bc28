"""A template process: containers start as copies (fork) of it instead of as fresh interpreters.

The local backend starts one per key and talks to it over a SOCK_SEQPACKET socket (one msgpack map
per packet; a fork request carries the new container's stdout and stderr as passed descriptors).

- A *runtime template* has only the runtime and its dependencies imported: a container forked from
  it skips interpreter start-up and those imports.
- A *snapshot template* (`enable_memory_snapshot=True`) has also imported the user's module and run
  the `@enter(snap=True)` hooks, once; every container forked from it starts from that state and runs
  only the other enter hooks.

The template is single-threaded (fork copies only the calling thread, so a template with threads
would hand broken copies to its containers). It reaps its children and reports their exit status.
Where the backend asks, it keeps one copy forked ahead of demand, a spare, which a container is
handed to instead of a new fork (`_spare`).

It runs in its containers' file system view (the backend starts it under the same sandbox), so they
inherit their volumes and files from it. In an image with its own root file system each container
first mounts a writable root of its own (`_mountns`). A snapshot template reports the user's source
files it imported (`sources`), so the backend can tell when the snapshot has gone stale; a retired
template forks no more and leaves after its last container.

Why this module is longer than ~500 lines: the template's isolation state (`_isolation`, `_hides`,
`_own_pids`, `_idmaps`) is process-global and set once before the first fork, then read in each copy
between `fork()` and its first user code, where every import and indirection is paid per container.
Preparing it and using it stay side by side; what does not touch it is in `_copyusers`, `_isolate`,
`_newroot` and `_snapshot_check`.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import selectors
import signal
import socket
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

from .. import _protocol as P
from .._protocol import templates as T
from .._protocol.definition import definition_from_wire
from ._snapshot_check import snapshot_problems, user_sources
from ._spare import Spares, wait_for_container

PACKET = T.PACKET


def _send(sock: socket.socket, msg: T.Sources | T.TemplateReady | T.TemplateFailed | T.Forked | T.Spared | T.Exited) -> None:
    sock.send(T.encode_packet(msg))


# The directory `python -m` put first on sys.path when this template started (its working directory).
_start_dir: str | None = None


def _send_sources(sock: socket.socket, files: list[list[Any]]) -> None:
    batch: list[list[Any]] = []
    size = 0
    for entry in files:  # in packets well under PACKET, however long the paths
        n = len(entry[0].encode(errors="replace")) + 32
        if batch and size + n > PACKET // 2:
            _send(sock, T.Sources(files=batch))
            batch, size = [], 0
        batch.append(entry)
        size += n
    if batch:
        _send(sock, T.Sources(files=batch))


_hides = False  # the containers forked from here hide the state directory from themselves (`_hide`)
# Containers forked from here are made containers by `_isolate` (None: not, as before): {"uid": host
# user to become or None, "idmap": user namespace descriptor or -1, "hidden": the state directory}.
_isolation: dict[str, Any] | None = None
_snapshot_template = False  # this template ran the user's imports and snap hooks (a memory snapshot)
# This template is process 1 of a PID namespace of its own (`_isolate_itself`): the pids it sees are not
# the host's, so each container it forks tells the backend itself that it was forked (the backend reads
# its host pid from the message's credentials) and learns its host pid when it is let go.
_own_pids = False
_placed_pid: int | None = None  # this container's pid as the host sees it, from the backend
# Host user -> a user namespace descriptor in which root is that user (`_mountapi.idmap_namespace`): made
# in the template, once per user its containers become (a helper process each time costs a container
# ~4 ms, far more on a busy machine), and kept for that user's next containers. A copy keeps only its own.
_idmaps: dict[int, int] = {}
IDMAPS_KEPT = 256
_interpreter_view: tuple[str | None, list[str]] | None = None  # (runtime path, `_interpreter_paths()`) in the template


def _prepare_isolation(settings: dict[str, Any], plan: dict[str, Any] | None, snapshot: bool,
                       code: Sequence[str] = ()) -> list[str]:
    """Get ready to fork containers into namespaces of their own (`_isolate`). What this machine does
    not allow, in words (each said once in the app's log); `_isolation` stays None where nothing works."""
    global _isolation, _hides, _own_pids
    from .. import _mountapi
    from . import _hide, _isolate

    notes: list[str] = []
    uid = settings.get("uid")
    if snapshot and uid is not None and os.geteuid() == 0 and _isolate.in_initial_user_namespace():
        try:
            from ._copyusers import isolate_snapshot

            own: list[str] | None = isolate_snapshot(settings, plan, [*_interpreter_paths(), *code])
        except OSError as exc:  # as before: the snapshot hides the state directory from itself (below)
            own = None
            notes.append(f"the memory snapshot could not isolate itself before running your code ({exc})")
        if own is not None:
            _own_pids = True
            notes = own
            pid_problem = _isolate.pid_namespaces_work()
            if pid_problem:
                notes.append(f"containers forked from a memory snapshot share its PID namespace ({pid_problem})")
            candidate = {"uid": None, "idmap": -1, "hidden": plan["dir"] if plan else None, "pidns": not pid_problem,
                         "copy_users": True}  # each copy its own user, the paths it keeps made by the backend
            problem = _probe_isolation(candidate, plan)
            if problem is not None:  # they are isolated as the snapshot is, in its namespaces
                return [*notes, f"containers forked from a memory snapshot share its namespaces ({problem})"]
            _isolation = candidate
            _isolate.warm()
            return notes
    try:
        _hide.own_namespace()
        if snapshot and plan is not None:  # it runs the user's code itself: hidden from itself first
            _hide.hide(plan)
            _hide.new_user_namespace()
    except OSError as exc:
        return [f"containers are not isolated from the host: no mount namespace ({exc})"]
    if snapshot and not _own_pids:  # not root: still a PID namespace of its own, owned by its user namespace
        _own_pids = _isolate.try_own_pid_namespace() is None  # (before the user's code; else said below)
    idmap = -1
    if uid is not None and (os.geteuid() != 0 or not _isolate.in_initial_user_namespace()):
        if os.geteuid() == 0:  # root, but only in a user namespace (a snapshot template runs user code)
            notes.append("containers forked from a memory snapshot keep the control plane's user (root) in "
                         "their user namespace, since the snapshot itself runs unprivileged code")
        uid = None
    if uid is not None:
        try:
            idmap = _mountapi.idmap_namespace(uid)
        except OSError as exc:
            notes.append(f"containers run as host root in their user namespace: no idmapped mounts here ({exc})")
            uid = None
    pid_problem = _isolate.pid_namespaces_work()
    if pid_problem and not _own_pids and _isolate.try_own_pid_namespace() is None:  # not root: in its own first
        _own_pids = True
        pid_problem = _isolate.pid_namespaces_work()
    if pid_problem:
        notes.append(f"containers{' forked from a memory snapshot' if snapshot else ''} see the host's processes: "
                     f"no PID namespace of their own ({pid_problem})")
    candidate = {"uid": uid, "idmap": idmap, "hidden": plan["dir"] if plan else None, "pidns": not pid_problem}
    problem = _probe_isolation(candidate, plan)
    if problem is not None and uid is not None:  # try again without changing user
        os.close(idmap)
        notes.append(f"containers run as host root in their user namespace ({problem})")
        candidate = {**candidate, "uid": None, "idmap": -1}
        problem = _probe_isolation(candidate, plan)
    if problem is not None:
        return [*notes, f"containers are not isolated from the host ({problem})"]
    _isolation = candidate
    _hides = plan is not None
    _isolate.warm()
    return notes


def _probe_isolation(candidate: dict[str, Any], plan: dict[str, Any] | None) -> str | None:
    """Whether a container can be isolated so: None, or why not (tried in a throw-away child)."""
    from . import _isolate, _mountns

    needed = [[p, not ro] for p, ro in (plan or {}).get("keep", ())]

    def attempt() -> None:
        _isolate.isolate(needed, candidate["hidden"], candidate["uid"], candidate["idmap"], candidate["pidns"])
        if candidate["uid"] is not None and open("/proc/self/uid_map").read().split()[:2] != ["0", str(candidate["uid"])]:
            raise OSError("the user namespace did not map root to the container's user")

    return _mountns.probe(attempt, _isolate.fork_in_new_pid_namespace if candidate["pidns"] else os.fork)


# A root file system image's containers each assemble a root and become a user of their own (`_newroot`).
_rootfs_isolation: dict[str, Any] | None = None


def _prepare_hiding(plan: dict[str, Any], snapshot: bool) -> str | None:
    """Get ready to hide the state directory from the containers forked from here (and, for a snapshot,
    from the user's code this template runs): None, or why the machine does not allow it."""
    global _hides
    from . import _hide
    from ._mountns import probe

    try:
        _hide.own_namespace()
        if snapshot:
            _hide.hide(plan)
            _hide.new_user_namespace()  # its mounts are locked now; its containers can still make their own
    except OSError as exc:
        return str(exc)

    def attempt() -> None:
        _hide.hide(plan)
        _hide.lock()

    problem = probe(attempt)
    _hides = problem is None
    return problem


def main(fd: int) -> None:
    global _start_dir
    _start_dir = os.getcwd()
    sock = socket.socket(fileno=fd)
    first = T.decode_start(sock.recv(PACKET))
    preloaded = None
    t0 = time.monotonic()
    isolation: list[str] = []
    if first.private_root and first.isolate is not None:  # its containers each become a user of their own
        if first.definition_path:
            _send(sock, T.TemplateFailed(error="a memory snapshot of an image with its own root file system would "
                                               "run your code as host root, where its containers run as users of "
                                               "their own"))
            return
        global _rootfs_isolation
        from ._newroot import prepare_template

        _rootfs_isolation, problem = prepare_template(int(first.isolate["uid"]))
        if problem is not None:
            isolation.append(f"containers of this image run as root in their own root ({problem})")
    if first.private_root and _rootfs_isolation is None:
        from ._mountns import probe

        problem = probe()
        if problem:
            _send(sock, T.TemplateFailed(error="a container forked from it could not get a root file system of "
                                               f"its own ({problem})"))
            return
    defn = None
    if first.definition_path:  # read before the state directory (where it is) is hidden
        with open(first.definition_path, "rb") as f:
            defn = definition_from_wire(P.decode(f.read()))
    visible = None
    global _snapshot_template
    _snapshot_template = defn is not None
    if first.isolate is not None and not first.private_root:
        code = [] if defn is None else [*defn.sys_path, os.path.dirname(defn.module_file or "")]
        isolation = _prepare_isolation(first.isolate, first.hide, snapshot=defn is not None,
                                       code=[p for p in code if p and os.path.isdir(p)])
    if first.hide is not None and _isolation is None:
        visible = _prepare_hiding(first.hide, snapshot=defn is not None)
    if defn is not None:
        from .. import _context

        _context.runtime_process = True  # the snapshot's module-level code sees modal.is_local() False
        if os.environ.get(P.ENV_MODAL_ALIAS, "1") == "1":  # the snapshot imports the user's `import modal` too
            from .. import _modal_alias

            _modal_alias.install()
        from ._load import load_service, run_snap_hooks

        try:
            preloaded = load_service(defn)
            timeline = {"import": time.monotonic() - t0}
            run_snap_hooks(preloaded, timeline)
            problems = snapshot_problems()
            if problems:
                raise RuntimeError("; ".join(problems))
        except BaseException as exc:
            traceback.print_exc()
            _send(sock, T.TemplateFailed(error=f"taking the snapshot failed: {type(exc).__name__}: {exc}"))
            return
        preloaded.snapshot_timeline = timeline
        _send_sources(sock, user_sources(defn))
    else:
        from .. import _modal_alias  # every container installs it (it imports importlib.abc: ~4 ms)

        preloaded = None
    from . import _runtime  # noqa: F401 - what every container needs, imported once here (~5 ms a copy)
    # What it holds now, its copies hold too: the cyclic collector in a copy leaves it alone, so it does
    # not write to every one of those objects (a copy of each page it touched, ms of a cold start).
    gc.freeze()
    _send(sock, T.TemplateReady(seconds=time.monotonic() - t0, visible=visible, isolation=isolation,
                                own_pids=_own_pids, copy_users=bool((_isolation or {}).get("copy_users"))))
    _serve(sock, preloaded, Spares(first.spares))


def _serve(sock: socket.socket, preloaded: Any, spares: Spares) -> None:
    global _interpreter_view
    if _isolation is not None:  # the same for each copy: worked out once, here
        _interpreter_view = (os.environ.get(P.ENV_RUNTIME_PATH), _interpreter_paths())
    children: dict[int, str] = {}
    retiring = False  # no more forks: leave once the last container forked from here has exited
    rfd, wfd = os.pipe()
    os.set_blocking(wfd, False)
    signal.set_wakeup_fd(wfd)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ, "cmd")
    sel.register(rfd, selectors.EVENT_READ, "chld")

    def leave_template() -> None:  # in a copy or a spare, first: nothing of the template's loop
        sel.close()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.close(rfd)
        os.close(wfd)

    def spare_life(name: str, end: socket.socket) -> None:  # in a spare (`_spare`): never returns
        leave_template()
        _own_idmap(None)  # every user's: its container's comes with it
        msg, fds, made_idmap = wait_for_container(name, end, sock, announce=_own_pids, rehearse=preloaded is None)
        _child(None, fds, msg, preloaded, made_idmap)

    while True:
        events = sel.select(None if retiring else spares.wait())
        if not events and spares.due():  # fork the next spare now, off any container's path
            spare = spares.make(_fork_copy, spare_life)
            if spare is not None and not _own_pids:  # else the spare says so itself
                _send(sock, T.Spared(name=spare.name, pid=spare.pid))
            continue
        for key, _ in events:
            if key.data == "chld":
                os.read(rfd, 4096)
                _reap(sock, children, spares)
                if retiring and not children:
                    os._exit(0)
                continue
            try:
                data, fds, _flags, _addr = socket.recv_fds(sock, PACKET, T.MAX_FDS + 3)
            except OSError:
                data = b""
            if not data:  # the backend is gone: so are we (our children were sent SIGTERM by it)
                os._exit(0)
            msg = T.decode_to_template(data)
            if type(msg) is T.Fork and msg.spare is not None:  # to the spare the backend placed
                _make_idmap(msg.uid)
                idmap = _idmaps.get(msg.uid, -1) if msg.uid is not None else -1
                pid = spares.hand_off(msg.spare, data, [*fds, *([idmap] if idmap >= 0 else [])])
                for fd in fds:
                    os.close(fd)
                if pid is not None:
                    children[pid] = msg.cid
                _send(sock, T.Forked(cid=msg.cid, pid=-1 if pid is None else pid))  # -1: fork it anew
                if pid is not None and msg.uid is not None:
                    _make_idmap(msg.uid + 1)
            elif type(msg) is T.Fork:
                _make_idmap(msg.uid)
                pid = _fork_copy()
                if pid == 0:
                    spares.close_in_copy()
                    leave_template()
                    _child(sock, fds, msg, preloaded)  # never returns
                for fd in fds:
                    os.close(fd)
                children[pid] = msg.cid
                if not _own_pids:  # else the copy says so itself (see `_child`)
                    _send(sock, T.Forked(cid=msg.cid, pid=pid))
                if msg.uid is not None:  # the user the next container gets while this one runs, made now
                    _make_idmap(msg.uid + 1)
            elif type(msg) is T.Retire:
                retiring = True
                spares.drop()
                if not children:
                    os._exit(0)
            elif type(msg) is T.TemplateStop:
                spares.drop()
                for pid in children:
                    _kill(pid, signal.SIGTERM)
                os._exit(0)


def _fork_copy() -> int:
    """os.fork() for a container's copy (or a spare): into a PID namespace of its own where they get one."""
    if (_isolation or _rootfs_isolation or {}).get("pidns"):
        from ._isolate import fork_in_new_pid_namespace

        return fork_in_new_pid_namespace()
    return os.fork()


def _reap(sock: socket.socket, children: dict[int, str], spares: Spares) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        cid = children.pop(pid, None)
        if cid is None:
            cid = spares.reaped(pid)  # a spare that died unused: the backend removes its cgroup
        if cid is not None:
            code = os.waitstatus_to_exitcode(status)
            _send(sock, T.Exited(cid=cid, code=code))


def _kill(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _unbuffered_stdio() -> None:
    """New `sys.stdout`/`sys.stderr` on fds 1 and 2, as `PYTHONUNBUFFERED=1` makes them in a fresh
    interpreter: every write reaches the pipe at once (a fresh interpreter's are set before it runs
    anything; a fork keeps the template's, block-buffered, which held a copy's output until it exited)."""
    import io

    for name, fd in (("stdout", 1), ("stderr", 2)):
        old = getattr(sys, name)
        stream = io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding=getattr(old, "encoding", None) or "utf-8",
                                  errors=getattr(old, "errors", None) or "strict", write_through=True)
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _make_idmap(uid: int | None) -> None:
    """In the template: the idmap namespace of host user `uid` (`_idmaps`), unless made already or its
    containers need none; where it cannot be made, the copy tries itself and says why it fails."""
    if _isolation is None or _isolation["uid"] is None or uid is None or uid == _isolation["uid"] or uid in _idmaps:
        return
    from .. import _mountapi

    while len(_idmaps) >= IDMAPS_KEPT:
        os.close(_idmaps.pop(next(iter(_idmaps))))
    with contextlib.suppress(OSError):
        _idmaps[uid] = _mountapi.idmap_namespace(uid)


def _own_idmap(uid: int | None) -> int:
    """In a copy, first thing: the descriptor of its own user's idmap namespace (-1: none made), every
    other user's closed."""
    mine = _idmaps.pop(uid, -1) if uid is not None else -1
    for fd in _idmaps.values():
        os.close(fd)
    _idmaps.clear()
    return mine


def _isolate_child(msg: T.Fork, given: dict[str, int], made_idmap: int = -1) -> None:
    """Make this copy a container of its own (`_isolate`), or leave without running the user's code.
    `given`: path -> a mount the backend made for it (`_copyusers`); `made_idmap`: its user's idmap
    namespace, made by the template (-1: it makes it itself)."""
    from .. import _mountapi
    from . import _isolate

    assert _isolation is not None
    view = _interpreter_view
    paths = view[1] if view is not None and view[0] == os.environ.get(P.ENV_RUNTIME_PATH) else _interpreter_paths()
    needed = [*msg.needed, *[[p, False] for p in paths]]
    host_pid = _placed_pid if _own_pids else _isolate.host_pid()
    if host_pid is not None and _isolation["pidns"]:
        os.environ[P.ENV_HOST_PID] = str(host_pid)
    uid, idmap = _isolation["uid"], _isolation["idmap"]
    try:
        if uid is not None and msg.uid not in (None, uid):  # a host user of its own
            uid = msg.uid
            os.close(idmap)
            # host root's files it may write look like its own
            idmap = made_idmap if made_idmap >= 0 else _mountapi.idmap_namespace(uid)
        elif _isolation.get("copy_users"):  # a memory snapshot's copy: its user, its mounts from the backend
            uid = msg.uid
        notes = _isolate.isolate(needed, _isolation["hidden"], uid, idmap, _isolation["pidns"], given)
    except OSError as exc:
        if not _snapshot_template or _own_pids:
            print(f"homeport: this container could not be isolated from the host ({exc}); it does not start",
                  file=sys.stderr)
            raise SystemExit(1) from None
        # A memory snapshot hid the control plane's state from itself before it ran user code (its
        # copies inherit that); what fails here is the rest of the isolation, said in the app's log.
        notes = [f"this container, forked from a memory snapshot, shares the snapshot's view of the host ({exc})"]
    for note in notes:
        print(f"homeport: {note}", file=sys.stderr)


def _interpreter_paths() -> list[str]:
    """What this interpreter reads as it goes (its standard library, its packages): kept in view."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    paths.update(p for p in sys.path if p and os.path.isdir(p))
    # The runtime's packages are links to the control plane's own, wherever those live (a virtual
    # environment under the host's /tmp, which an isolated process does not otherwise see).
    for d in os.environ.get(P.ENV_RUNTIME_PATH, "").split(os.pathsep):
        with contextlib.suppress(OSError):
            for name in os.listdir(d):
                paths.add(os.path.realpath(os.path.join(d, name)))
    return sorted(paths)


def _wait_until_placed(hold: int) -> None:
    """Wait until the backend has put this copy where it belongs (its cgroup), before it runs
    anything that could use memory beyond its limit; leave if the backend gave up instead."""
    global _placed_pid
    try:
        go = os.read(hold, 32)  # b"go", then this copy's host pid where the template's pids are its own
    except OSError:
        go = b""
    os.close(hold)
    if not go.startswith(b"go"):
        os._exit(1)
    if go[2:].isdigit():
        _placed_pid = int(go[2:])


def _child(sock: socket.socket | None, fds: list[int], msg: T.Fork, preloaded: Any, made_idmap: int | None = None) -> None:
    """A container's copy from its fork (or a spare's from its hand-off: `sock` None, the template's
    socket closed already and its user's idmap namespace `made_idmap` passed with it) to its exit."""
    if sock is not None:
        if _own_pids:  # the backend reads this copy's host pid from the message's credentials (SO_PASSCRED)
            _send(sock, T.Forked(cid=msg.cid, pid=0))
        sock.close()  # first: a copy that still held the template's socket would hide the template's exit
    if made_idmap is None:
        made_idmap = _own_idmap(msg.uid)
    if msg.held:
        _wait_until_placed(fds.pop())
    code = 1
    try:
        os.setsid()  # its own process group, like a spawned container, so stop() reaches its children
        out, err, *given = fds  # then the mounts of `msg.mounts` (`_copyusers`)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.close(out)
        os.close(err)
        _unbuffered_stdio()  # the template's stdio buffered for a pipe: a copy's prints must travel at once
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.environ.clear()
        os.environ.update(msg.env)
        cwd = msg.cwd
        if _isolation is not None and not msg.private_root:  # before any user code runs here
            _isolate_child(msg, dict(zip(msg.mounts, given)), made_idmap)
        else:
            if made_idmap >= 0:
                os.close(made_idmap)
            if msg.hide is not None and _hides:
                from ._hide import hide_or_leave

                hide_or_leave(msg.hide)
        if msg.private_root and _rootfs_isolation is not None:  # a root of its own, as a user of its own
            from ._newroot import enter_from_template

            enter_from_template(msg.cid, msg.uid or _rootfs_isolation["uid"], _rootfs_isolation["pidns"])
        elif msg.private_root:  # a root file system image: a writable root of its own, first
            from ._mountns import private_root

            private_root()
            if cwd:
                with contextlib.suppress(OSError):  # an image's workdir exists in it, like in a Dockerfile
                    os.makedirs(cwd, exist_ok=True)
        if cwd:
            os.chdir(cwd)
        if sys.path and sys.path[0] == _start_dir:  # like a fresh `python -m`: the container's own directory
            sys.path[0] = os.getcwd()
        # Per-container state must differ between copies of one snapshot.
        random.seed()
        if "numpy" in sys.modules:
            try:
                sys.modules["numpy"].random.seed()
            except Exception:
                pass
        from ._runtime import main as container_main

        container_main(preloaded=preloaded, started_at=msg.t0)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
