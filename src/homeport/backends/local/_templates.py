"""Template processes that local containers are forked from (see `homeport.runtime._template`).

A template runs in the file system view of its containers, under the same sandbox a spawned container
of them would get (`_sandbox.wrap`): the containers forked from it inherit that view, volumes and
local files included, so a container that mounts something starts as fast as one that does not. In a
root file system image each forked container then mounts its own writable layer over the template's
root (`homeport.runtime._mountns`), so its writes stay its own as in a container started afresh.

The control plane's state directory is hidden from every container forked here (`_private`): each
hides it from itself before the user's code runs, and a snapshot template hides it from itself too.
So that a container's private temporary directory stays within what the template sees, it lies in a
directory of the template's own (under the backend's scratch directory), empty when the template starts.

A snapshot template reports the user's source files it imported; before each fork they are checked,
and a template whose sources changed since is replaced by a new one (the key covers only the module
file of the function itself), as is one whose mounted directories were replaced (a volume deleted
and created again under its name).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import struct
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from ... import _protocol as P
from ..._protocol import templates as T
from .._base import Mount, PrivateDir, TemplateSpec
from . import _copymounts, _gpu, _private, _rootfs, _sandbox
from ._spares import Spare, SparePool

log = logging.getLogger("homeport.backend.local")

PACKET = T.PACKET
START_TIMEOUT = 120.0  # a snapshot template runs the user's imports and snap hooks

Sink = Callable[[int, bytes], None]  # (fd, line): where a template's own output goes


class TemplateUnavailable(Exception):
    """This container cannot be forked from its template; the reason says why."""


class SpareLost(TemplateUnavailable):
    """The spare taken for this container is gone (or its template is): fork it as before."""


class Forked(NamedTuple):
    pid: int
    scratch: str | None  # the container's private temporary directory, removed when it exits
    visible: str | None  # why the state directory is not hidden from it (None: it is, or nothing is hidden)
    isolation: tuple[str, ...] = ()  # what of its isolation from the host this machine does not allow


# Containers forked from templates run in namespaces of their own (`homeport.runtime._isolate`):
# HOMEPORT_ISOLATION=0 turns that off (as before: a comparison in bench/, or a machine that cannot);
# HOMEPORT_CONTAINER_UID is the host user they become when the control plane runs as root.
ENV_ISOLATION = "HOMEPORT_ISOLATION"
ENV_CONTAINER_UID = "HOMEPORT_CONTAINER_UID"
DEFAULT_CONTAINER_UID = 65534
# Unless HOMEPORT_CONTAINER_UID says otherwise, each container (a memory snapshot's too, `_copymounts`)
# is a host user of its own from this range.
CONTAINER_UIDS = P.CONTAINER_UIDS
CONTAINER_UID_COUNT = P.CONTAINER_UID_COUNT
# Host directories every isolated container may read and write (':'-separated; none by default): an
# operator's choice, for local development and this project's own tests, whose apps leave notes there.
ENV_CONTAINER_SHARED = "HOMEPORT_CONTAINER_SHARED"


def shared_dirs(environ: Mapping[str, str] | None = None) -> list[str]:
    environ = os.environ if environ is None else environ
    return [os.path.abspath(p) for p in environ.get(ENV_CONTAINER_SHARED, "").split(":") if p.strip()]


def container_uid(taken: set[int], environ: Mapping[str, str] | None = None) -> int | None:
    """A host user of its own for a new container, not in `taken` (those of the containers running):
    CONTAINER_UIDS + n, the lowest n free, so that containers cannot signal, trace or read the private
    files of one another as the same user. None where `HOMEPORT_CONTAINER_UID` names the one user
    every container gets (or isolation is off)."""
    environ = os.environ if environ is None else environ
    if environ.get(ENV_ISOLATION, "1") == "0" or environ.get(ENV_CONTAINER_UID, "").strip():
        return None
    for n in range(CONTAINER_UID_COUNT):
        if CONTAINER_UIDS + n not in taken:
            return CONTAINER_UIDS + n
    return None  # every one taken: the shared default


def isolation_settings(environ: Mapping[str, str] | None = None) -> dict | None:
    """What the template is told about isolating its containers (None: not to)."""
    environ = os.environ if environ is None else environ
    if environ.get(ENV_ISOLATION, "1") == "0":
        return None
    raw = environ.get(ENV_CONTAINER_UID, "").strip()
    try:
        uid = int(raw) if raw else DEFAULT_CONTAINER_UID
    except ValueError:
        raise ValueError(f"{ENV_CONTAINER_UID} must be a host user id, not {raw!r}") from None
    if uid < 0:
        raise ValueError(f"{ENV_CONTAINER_UID} must be a host user id, not {uid}")
    return {"uid": uid or None}  # 0: containers keep the control plane's user (root, mapped in their namespace)


def needed_paths(private: PrivateDir | None, mounts: tuple[Mount, ...], scratch: str | None, cwd: str | None,
                 code: tuple[str, ...], own: tuple[str, ...] = (), container: bool = True) -> list[list]:
    """[path, writable] an isolated container keeps in view: what it keeps of the state directory (for a
    `container`, the shared directories read-only but for its `own` entries), its scratch directory,
    its volumes and files, its working directory and the user's code."""
    plan = _private.plan(private, [*([scratch] if scratch else []), *own], container=container)
    needed = [[p, not ro] for p, ro in [*plan["keep"], *plan.get("outside", ())]] if plan else []
    needed += [[p, True] for p in (scratch, *own) if p]
    needed += [[m.target, not m.read_only] for m in mounts]
    needed += [[p, False] for p in (*code, cwd) if p]
    needed += [[p, True] for p in shared_dirs()]
    return needed


@dataclass(eq=False)  # one per process: compared and hashed by identity
class _Template:
    spec: TemplateSpec
    process: asyncio.subprocess.Process
    sock: socket.socket
    ready: asyncio.Future
    forks: dict[str, asyncio.Future] = field(default_factory=dict)  # cid -> pid
    children: set[str] = field(default_factory=set)
    last_used: float = field(default_factory=time.monotonic)
    reader: asyncio.Task | None = None
    pumps: list[asyncio.Task] = field(default_factory=list)
    waiter: asyncio.Task | None = None
    # The user's source files the template imported: (path, (mtime_ns, size, inode)) when it did.
    sources: list[tuple[str, tuple[int, int, int]]] = field(default_factory=list)
    # What its mounts were when it started: (source, (device, inode)). A volume deleted and made
    # again under its name is a new directory, which the template's bind mount does not show.
    mounted: list[tuple[str, tuple[int, int]]] = field(default_factory=list)
    scratch: str = ""  # the template's own directory, where its containers' temporary directories are
    hides: bool = False  # its containers hide the state directory from themselves
    visible: str | None = None  # why they cannot, where it was asked
    isolation: tuple[str, ...] = ()  # what of its containers' isolation this machine does not allow
    own_pids: bool = False  # an isolated snapshot: each copy says it was forked, and learns its host pid
    copy_uid: int | None = None  # an isolated snapshot: its copies' paths are made here (`_copymounts`)
    spares: dict[str, Spare] = field(default_factory=dict)  # its copies forked ahead of demand (`_spares`)

    def changed(self) -> str | None:
        """What changed since the template started, so that its copies would not match a fresh start."""
        for path, seen in self.sources:
            try:
                st = os.stat(path)
            except OSError:
                return f"{path} is gone"
            if (st.st_mtime_ns, st.st_size, st.st_ino) != seen:
                return f"{path} changed"
        for path, identity in self.mounted:
            try:
                st = os.stat(path)
            except OSError:
                return f"{path} is gone"
            if (st.st_dev, st.st_ino) != identity:
                return f"{path} was replaced"
        return None


def _identities(spec: TemplateSpec) -> list[tuple[str, tuple[int, int]]]:
    out = []
    for m in spec.mounts:
        try:
            st = os.stat(m.source)
        except OSError:
            continue
        out.append((m.source, (st.st_dev, st.st_ino)))
    return out


def rootfs_isolation(spec: TemplateSpec) -> dict | None:
    """What a template in a root file system image is told about its containers' own users (None:
    they run as before, root in their own root; see `_rootfs.isolated_root`)."""
    settings = isolation_settings()
    if not spec.rootfs or settings is None or not _rootfs.isolated_root(spec.rootfs, settings["uid"]):
        return None
    return {"uid": settings["uid"], "rootfs": True}


def _command(spec: TemplateSpec, fd: int) -> tuple[list[str], str | None]:
    """The template's command line, in its containers' sandbox, and the directory to start it in."""
    argv = [*spec.argv, "--template", str(fd)]
    dev = _gpu.container_dev(spec.gpus)  # on a GPU host: only the GPU nodes its containers may be given
    if spec.mounts or spec.rootfs or (dev is not None and shutil.which("bwrap")):
        # the sandbox changes to the working directory inside its own view
        mounts = _gpu.with_driver(spec.mounts, spec.rootfs, spec.gpus)
        rootfs = rootfs_isolation(spec)
        return _sandbox.wrap(argv, mounts, spec.rootfs, spec.cwd, dev=dev, uid=rootfs["uid"] if rootfs else None,
                             template=True), None
    return argv, spec.cwd if spec.cwd and os.path.isdir(spec.cwd) else None


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


async def _recv(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> tuple[bytes, int]:
    """A packet from a template, and the pid of the process that sent it as this process sees it (the
    kernel's credentials, SO_PASSCRED): a copy of a template in a PID namespace of its own says so."""
    while True:
        try:
            data, ancillary, _flags, _addr = sock.recvmsg(PACKET, socket.CMSG_SPACE(12))
            break
        except (BlockingIOError, InterruptedError):
            ready: asyncio.Future[None] = loop.create_future()
            fd = sock.fileno()  # -1 once closed (while it waits)
            loop.add_reader(fd, _wake, ready)
            try:
                await ready
            finally:
                loop.remove_reader(fd)
    sender = 0
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(payload) >= 12:
            sender = struct.unpack("iII", payload[:12])[0]
    return data, sender


class Templates:
    """One template process per key; forks containers from it and reports their exits."""

    def __init__(self, scratch: str, on_child_exit: Callable[[str, int | None], None],
                 private: PrivateDir | None = None, spares: SparePool | None = None) -> None:
        self._scratch = scratch
        self._private = private
        self._on_child_exit = on_child_exit
        self._templates: dict[str, _Template] = {}  # the one each key forks from now
        self._live: set[_Template] = set()  # every template process not yet exited, retired ones too
        self._failed: dict[str, str] = {}
        self._starting: dict[str, asyncio.Task] = {}
        self._copies = _copymounts.CopyMounts()
        self._spares = spares  # None: no spare copies (`_spares.enabled`)

    def take_spare(self, spec: TemplateSpec) -> Spare | None:
        """A placed spare of the template `spec` forks from now, for one container (`fork(spare=)`)."""
        tpl = self._templates.get(spec.key)
        if (self._spares is None or tpl is None or not tpl.spares or tpl.process.returncode is not None
                or not tpl.ready.done() or tpl.ready.cancelled() or tpl.ready.exception() is not None):
            return None
        return SparePool.take(tpl.spares) if tpl.changed() is None else None

    async def fork(self, spec: TemplateSpec, cid: str, env: dict[str, str], cwd: str | None,
                   out_w: int, err_w: int, sink: Sink, place: Callable[[int], Awaitable[None]] | None = None,
                   code: tuple[str, ...] = (), uid: int | None = None, spare: Spare | None = None) -> Forked:
        """Fork container `cid` from its template, starting the template first if needed; what the
        template prints while it starts (a snapshot's imports and hooks) goes to `sink`. Its TMPDIR
        is made here, unless it has a root file system of its own (and its own /tmp).

        With `place`, the copy is held before it runs anything until `place(pid)` has returned (the
        backend puts it in its cgroup then): it waits on a pipe whose write end is kept here, and
        leaves without running if the pipe closes unwritten. `uid`: the host user it becomes (`container_uid`).

        With `spare` (`take_spare`), the container is handed to that copy, placed already, instead of
        forked; `SpareLost` if it is gone (it is released either way, unless it became the container)."""
        try:
            return await self._fork(spec, cid, env, cwd, out_w, err_w, sink, place, code, uid, spare)
        except BaseException:
            if spare is not None and self._spares is not None:
                self._spares.gone(spare)
            raise

    async def _fork(self, spec: TemplateSpec, cid: str, env: dict[str, str], cwd: str | None,
                    out_w: int, err_w: int, sink: Sink, place: Callable[[int], Awaitable[None]] | None,
                    code: tuple[str, ...], uid: int | None, spare: Spare | None) -> Forked:
        if spec.key in self._failed:
            raise TemplateUnavailable(self._failed[spec.key])
        tpl = await self._get(spec, sink)
        if spare is not None and spare.owner is not tpl:
            raise SpareLost("its template was replaced")
        tpl.last_used = time.monotonic()
        scratch = None
        own: tuple[str, ...] = ()  # its entries in the shared directories (its web sockets' directory)
        if not spec.rootfs:
            scratch = os.path.join(tpl.scratch, cid)
            os.makedirs(scratch, mode=0o700, exist_ok=True)
            env = {**env, "TMPDIR": scratch}
            own = tuple(_private.own_entries(self._private, cid))
        fut = asyncio.get_running_loop().create_future()
        tpl.forks[cid] = fut
        msg = T.Fork(cid=cid, env=env, cwd=cwd, t0=time.time(), private_root=bool(spec.rootfs),
                     hide=_private.plan(self._private, [scratch, *own] if scratch else [], container=True)
                     if tpl.hides else None,
                     held=place is not None or tpl.own_pids, needed=self._needed(spec, scratch, cwd, code, own),
                     uid=uid, spare=spare.name if spare is not None else None)
        if spare is not None:  # placed already; held only to learn its host pid (`own_pids`)
            place = None
            msg.held = tpl.own_pids
        try:  # before the hold pipe, which the copy takes last; for its user, or the template's
            sources = {m.target: m.source for m in spec.mounts}  # its volumes, at their paths in its view
            msg.mounts, mounts = self._copies.make(uid or tpl.copy_uid, msg.needed, sources) if tpl.copy_uid else ([], [])
        except OSError as exc:
            tpl.forks.pop(cid, None)
            shutil.rmtree(scratch or "", ignore_errors=True)
            raise TemplateUnavailable(f"its paths could not be made for its user ({exc})") from None
        fds = [out_w, err_w, *mounts]
        hold_r = hold_w = -1
        if msg.held:
            hold_r, hold_w = os.pipe()
            fds.append(hold_r)
        try:
            try:
                try:
                    socket.send_fds(tpl.sock, [T.encode_packet(msg)], fds)
                except OSError as exc:
                    tpl.forks.pop(cid, None)
                    raise TemplateUnavailable(f"the template process is gone ({exc})") from None
                finally:
                    for fd in fds[2:]:
                        os.close(fd)  # the copy has its own (mounts, the hold pipe's end)
                if spare is not None and hold_w >= 0:  # nothing to wait for: it is in its cgroup
                    with contextlib.suppress(OSError):
                        os.write(hold_w, b"go" + str(spare.pid).encode())
                pid = await fut
                if spare is not None and pid < 0:
                    raise SpareLost("the spare is gone")
                if spare is not None:
                    pid = spare.pid  # as this process sees it (the template's may be its own namespace's)
            except TemplateUnavailable:
                if scratch:
                    shutil.rmtree(scratch, ignore_errors=True)
                raise
            if place is not None:
                await place(pid)
            if hold_w >= 0 and spare is None:
                os.write(hold_w, b"go" + (str(pid).encode() if tpl.own_pids else b""))
        finally:
            if hold_w >= 0:
                os.close(hold_w)  # unwritten (place failed, or this was cancelled): the copy leaves
        tpl.children.add(cid)
        return Forked(pid, scratch, tpl.visible, tpl.isolation)

    def _needed(self, spec: TemplateSpec, scratch: str | None, cwd: str | None,
                code: tuple[str, ...], own: tuple[str, ...] = (), container: bool = True) -> list[list]:
        return needed_paths(self._private, spec.mounts, scratch, cwd, code, own, container)

    async def warm(self, spec: TemplateSpec, sink: Sink) -> None:
        tpl = await self._get(spec, sink)
        tpl.last_used = time.monotonic()

    async def _get(self, spec: TemplateSpec, sink: Sink) -> _Template:
        tpl = self._templates.get(spec.key)
        if tpl is not None and tpl.process.returncode is None:
            await tpl.ready
            changed = tpl.changed()
            if changed is None:
                return tpl
            log.info("template %s is stale (%s): starting a new one", spec.key[:12], changed)
            self._stop(tpl)
        task = self._starting.get(spec.key)
        if task is None:
            task = self._starting[spec.key] = asyncio.create_task(self._start(spec, sink))
        try:
            return await asyncio.shield(task)
        finally:
            self._starting.pop(spec.key, None)

    async def _start(self, spec: TemplateSpec, sink: Sink) -> _Template:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        first = T.TemplateStart(private_root=bool(spec.rootfs), spares=self._spares is not None)
        if spec.definition is not None:
            path = os.path.join(self._scratch, f"template-{spec.key[:32]}.defn")
            with open(path, "wb") as f:  # noqa: ASYNC230 - a small local file
                f.write(spec.definition)
            first.definition_path = path
        sandboxed = bool(spec.mounts or spec.rootfs)
        mounted = _identities(spec)  # before the template binds them
        own = tempfile.mkdtemp(prefix=f"tpl-{spec.key[:12]}-", dir=self._scratch)
        # A root file system holds only what is bound into it: nothing of the state directory to hide.
        hide = None if spec.rootfs else _private.plan(self._private, [own])
        if hide is not None:
            first.hide = hide
        isolate = rootfs_isolation(spec) if spec.rootfs else isolation_settings()
        if isolate is not None and spec.rootfs:  # its containers assemble roots of their own (`_newroot`)
            first.isolate = isolate
        elif isolate is not None:  # a snapshot isolates itself as its containers: what they keep in view
            # (the shared directories read-only: its copies get their own entries from here, `_copymounts`)
            first.isolate = {**isolate, "needed": self._needed(spec, own, spec.cwd, (), container=True)}
        try:
            command, cwd = _command(spec, child.fileno())
            process = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=_gpu.library_env(spec.env, spec.gpus), pass_fds=(child.fileno(),), start_new_session=True,
                cwd=cwd,
            )
        except (OSError, _sandbox.SandboxUnavailable) as exc:
            parent.close()
            os.rmdir(own)
            raise TemplateUnavailable(f"the template process could not start: {exc}") from None
        finally:
            child.close()
        parent.setblocking(False)
        parent.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # who sent each packet (`_recv`)
        loop = asyncio.get_running_loop()
        tpl = _Template(spec, process, parent, loop.create_future(), mounted=mounted, scratch=own,
                        hides=hide is not None, copy_uid=(first.isolate or {}).get("uid") if not spec.rootfs else None)
        self._templates[spec.key] = tpl
        assert process.stdout is not None and process.stderr is not None  # both are pipes
        tpl.pumps = [asyncio.create_task(self._pump(sink, fd, stream))
                     for fd, stream in ((1, process.stdout), (2, process.stderr))]
        tpl.reader = asyncio.create_task(self._read(tpl))
        tpl.waiter = asyncio.create_task(self._wait(tpl))
        self._live.add(tpl)
        parent.send(T.encode_packet(first))
        try:
            await asyncio.wait_for(asyncio.shield(tpl.ready), START_TIMEOUT)
        except asyncio.TimeoutError:
            reason = f"the template did not become ready within {START_TIMEOUT:g}s"
            self._fail(tpl, reason)
            raise TemplateUnavailable(reason) from None
        except TemplateUnavailable as exc:
            self._failed[spec.key] = str(exc)
            raise
        log.info("template %s ready (%s%s)", spec.key[:12], "snapshot" if spec.definition else "runtime",
                 ", sandboxed" if sandboxed else "")
        return tpl

    async def _wait(self, tpl: _Template) -> None:
        await tpl.process.wait()
        self._live.discard(tpl)
        if self._spares is not None:
            self._spares.all_gone(tpl.spares)
        with contextlib.suppress(OSError):  # empty once the last of its containers has exited
            os.rmdir(tpl.scratch)

    async def _pump(self, sink: Sink, fd: int, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            sink(fd, line)

    async def _read(self, tpl: _Template) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data, sender = await _recv(loop, tpl.sock)
            except OSError:
                data, sender = b"", 0
            if not data:
                self._fail(tpl, "the template process exited")
                return
            msg = T.decode_from_template(data)
            if type(msg) is T.Sources:
                tpl.sources += [(path, (mtime, size, ino)) for path, mtime, size, ino in msg.files]
            elif type(msg) is T.TemplateReady:
                tpl.isolation = tuple(msg.isolation)
                tpl.own_pids = msg.own_pids
                tpl.copy_uid = tpl.copy_uid if msg.copy_users else None
                tpl.visible = msg.visible if tpl.hides else None
                tpl.hides = tpl.hides and tpl.visible is None
                tpl.ready.set_result(None)
            elif type(msg) is T.TemplateFailed:
                self._fail(tpl, msg.error)
                return
            elif type(msg) is T.Forked:
                fut = tpl.forks.pop(msg.cid, None)
                if fut is not None and not fut.done():
                    fut.set_result(msg.pid or sender)  # 0: sent by the copy itself (`own_pids`)
            elif type(msg) is T.Spared and self._spares is not None:
                self._spares.spared(tpl.spares, Spare(msg.name, msg.pid or sender, tpl),
                                    lambda: tpl in self._live)
            elif type(msg) is T.Exited and msg.cid in tpl.spares:  # a spare that died unused
                if self._spares is not None:
                    self._spares.gone(tpl.spares.pop(msg.cid))
            elif type(msg) is T.Exited:
                fut = tpl.forks.pop(msg.cid, None)
                if fut is not None and not fut.done():  # a copy that died before it could say it was forked
                    fut.set_exception(TemplateUnavailable("the copy exited as it started"))
                tpl.children.discard(msg.cid)
                tpl.last_used = time.monotonic()
                self._on_child_exit(msg.cid, msg.code)

    def _fail(self, tpl: _Template, reason: str) -> None:
        if self._templates.get(tpl.spec.key) is tpl:
            del self._templates[tpl.spec.key]
        if not tpl.ready.done():
            tpl.ready.set_exception(TemplateUnavailable(reason))
            tpl.ready.exception()  # retrieved: no "never retrieved" warning when nobody waits
        for fut in tpl.forks.values():
            if not fut.done():
                fut.set_exception(TemplateUnavailable(reason))
        tpl.forks.clear()
        for cid in list(tpl.children):  # orphans: their exits can no longer be observed through it
            self._on_child_exit(cid, None)
        tpl.children.clear()
        with contextlib.suppress(OSError):
            tpl.sock.close()
        self._kill(tpl)

    @staticmethod
    def _kill(tpl: _Template) -> None:
        # Its process group: a sandboxed template runs under bubblewrap, whose child would outlive it.
        # Containers forked from it have groups of their own. Once reaped, its pid may name another.
        if tpl.process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(tpl.process.pid, signal.SIGKILL)

    def sweep(self, now: float) -> None:
        """Stop templates that have had no container for longer than their TTL."""
        for tpl in list(self._templates.values()):
            if not tpl.children and not tpl.forks and now - tpl.last_used > tpl.spec.ttl:
                log.info("stopping template %s: unused for %.0fs", tpl.spec.key[:12], now - tpl.last_used)
                self._stop(tpl)

    def _stop(self, tpl: _Template) -> None:
        """No more forks from this template. It exits now if no container of it runs; else it retires,
        still reporting their exits, and leaves after the last one (they are not stopped for it)."""
        if self._templates.get(tpl.spec.key) is tpl:
            del self._templates[tpl.spec.key]
        if tpl.children or tpl.forks:
            with contextlib.suppress(OSError):
                tpl.sock.send(T.encode_packet(T.Retire()))
            return
        self._close(tpl)

    def _close(self, tpl: _Template) -> None:
        """Stop the template process (and, if any are left, the containers forked from it)."""
        if tpl.reader is not None:
            tpl.reader.cancel()
        with contextlib.suppress(OSError):
            tpl.sock.send(T.encode_packet(T.TemplateStop()))
        with contextlib.suppress(OSError):
            tpl.sock.close()

    async def close(self) -> None:
        self._templates.clear()
        live = list(self._live)
        self._copies.close()
        for tpl in live:
            self._close(tpl)
        for tpl in live:
            assert tpl.waiter is not None
            try:
                await asyncio.wait_for(asyncio.shield(tpl.waiter), 5)
            except asyncio.TimeoutError:
                self._kill(tpl)
                await tpl.waiter
        if self._spares is not None:  # their cgroups emptied and removed
            await self._spares.close()
