"""The local backend: one supervised OS process (group) per container on this machine.

A container starts either as a fresh interpreter (`spawn`) or as a copy of a template process
(`fork`, see `_templates`), which skips interpreter start-up and imports, and for memory snapshots the
user's own imports and `snap=True` enter hooks. Containers with volumes, local files or a root file
system are forked too: their template runs in the same view. Either way a container gets its own
process group, pipes for stdout and stderr, and a private TMPDIR. When a container cannot be forked
it is spawned, and the app is told why, once.

The control plane's state directory (`private`) is hidden from every container (see `_private`);
where the machine cannot do that, the app is told so, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import shutil
import signal
import time
from typing import Literal

from ... import _protocol as P
from .._base import Backend, ContainerSpec, ExitCallback, ExitInfo, OutputCallback, PrivateDir, TemplateSpec
from . import _gpu, _private, _rootfs, _sandbox, _spares
from ._cgroups import ENV_PIDS_MAX, Cgroup, Cgroups, CgroupsUnavailable, pids_max_setting
from ._spares import Spare, SparePool
from ._templates import Templates, TemplateUnavailable, container_uid, isolation_settings, needed_paths

log = logging.getLogger("homeport.backend.local")

SWEEP_SECONDS = 30.0
PIDS_CHECK_SECONDS = 1.0  # how often live containers' cgroups are asked whether a fork hit the process limit


class _Proc:
    def __init__(self, spec: ContainerSpec, pid: int, on_exit: ExitCallback,
                 on_output: OutputCallback | None = None) -> None:
        self.spec = spec
        self.on_output: OutputCallback = on_output or (lambda _cid, _fd, _line: None)
        self.pid = pid
        self.on_exit = on_exit
        self.pumps: list[asyncio.Task] = []
        self.kill_timer: asyncio.TimerHandle | None = None
        self.process: asyncio.subprocess.Process | None = None  # when spawned (not forked)
        self.exited = False
        self.cgroup: Cgroup | None = None
        self.scratch: str | None = None  # its private TMPDIR, removed when it exits
        self.sandboxed = False  # spawned under a sandbox, which reports a killed child as 128 + signal
        self.pids_told = 0  # how many failed forks at the process limit the app has been told of


def _pipe_file(loop: asyncio.AbstractEventLoop, fd: int):
    """The file object `connect_read_pipe` takes for pipe `fd`, closed once. uvloop's libuv closes the
    descriptor itself and then closes the file object too: a second close(fd) that, when the number
    had been reused meanwhile (a file read in a worker thread, a template's new socket pair), closed
    another's descriptor (seen: a thread read a template's first packet as /proc/self/cgroup, and the
    template never started). asyncio's own loop closes only the file object."""
    return os.fdopen(fd, "rb", 0, closefd=not type(loop).__module__.startswith("uvloop"))


class LocalBackend(Backend):
    name = "local"

    def __init__(self, scratch_dir: str | None = None, private: PrivateDir | None = None) -> None:
        self._procs: dict[str, _Proc] = {}
        self._scratch = scratch_dir
        self._private = private
        self._bwrap_problem: str | Literal[False] | None = False  # why bubblewrap cannot hide it here; False: not tried
        self._network_problem: str | Literal[False] | None = False  # why no container gets its own network; False: not tried
        self._told_visible: set[str] = set()  # apps told that the state directory is visible to their containers
        self._templates: Templates | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._cgroups = Cgroups(pids_max=pids_max_setting())
        self._told: set[tuple[str, str]] = set()  # (app, template key): the app was told why not forked
        self._told_uncontained: set[str] = set()
        self._told_isolation: set[tuple[str, str]] = set()  # (app, what of the isolation is missing)  # apps told their containers have no cgroup of their own
        self._pids_watch: asyncio.Task | None = None
        self._uids: dict[str, int] = {}  # container id -> its own host user, while it runs
        self._cleanups: set[asyncio.Task] = set()  # exited containers' leftovers being removed (`_remove_leftovers`)

    def _spawn_task(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _tmpdir(self, spec: ContainerSpec) -> str | None:
        """A private temporary directory for a spawned container, removed when it exits."""
        if not self._scratch:
            return None
        tmp = os.path.join(self._scratch, spec.container_id)
        os.makedirs(tmp, mode=0o700, exist_ok=True)
        return tmp

    async def start(self, spec: ContainerSpec, on_output: OutputCallback, on_exit: ExitCallback) -> int:
        spare = self._take_spare(spec)
        if spare is not None:  # its template's copy, forked and in a cgroup of its own already
            log.debug("container %s: handed to spare %s (pid %d)", spec.container_id, spare.name, spare.pid)
            try:
                return await self._fork(spec, dict(spec.env), on_output, on_exit, spare.cgroup, spare)
            except TemplateUnavailable:  # the spare is gone (and released): as before
                pass
            except BaseException:
                self._uids.pop(spec.container_id, None)
                raise
        # Its move into its cgroup, in a few ms, would otherwise wait for the kernel then.
        self._spawn_task(asyncio.to_thread(self._cgroups.prepare_move))
        cgroup = self._cgroup(spec, on_output)
        try:
            return await self._start(spec, on_output, on_exit, cgroup)
        except BaseException:
            if cgroup is not None:
                cgroup.remove()
            self._uids.pop(spec.container_id, None)
            raise

    def _uid(self, cid: str) -> int | None:
        """Container `cid`'s own host user (`container_uids`), taken until it exits; None where every
        container gets the one `HOMEPORT_CONTAINER_UID` names."""
        if cid not in self._uids:
            uid = container_uid(set(self._uids.values()))
            if uid is None:
                return None
            self._uids[cid] = uid
        return self._uids[cid]

    def _cgroup(self, spec: ContainerSpec, on_output: OutputCallback) -> Cgroup | None:
        """The container's own cgroup, made before its process exists: the process joins it before it
        runs anything (see `_spawn` and `_fork`), so no memory it uses escapes the limit. Every
        container gets one, limited or not: its process limit, and stopping all it started, need it."""
        try:
            cgroup = self._cgroups.create(f"homeport-{spec.container_id}", spec.memory_limit_mib, spec.cpu_limit)
        except (CgroupsUnavailable, OSError) as exc:
            if spec.memory_limit_mib is not None or spec.cpu_limit is not None:
                self._unlimited(spec, str(exc), on_output)
            self._uncontained(spec, str(exc), on_output)
            return None
        self._watch(cgroup)
        return cgroup

    def _watch(self, cgroup: Cgroup) -> None:
        if getattr(cgroup, "pids", None) is not None and self._pids_watch is None:
            self._pids_watch = asyncio.create_task(self._watch_pids())

    def _take_spare(self, spec: ContainerSpec) -> Spare | None:
        """A spare copy of the container's template for it (`_spares`), where it may take one."""
        if (spec.template is None or self._templates is None or not self._scratch
                or not _spares.usable_by(spec.memory_limit_mib, spec.cpu_limit)):
            return None
        return self._templates.take_spare(spec.template)

    def _uncontained(self, spec: ContainerSpec, reason: str, on_output: OutputCallback) -> None:
        """Say, once per app, that its containers' processes are neither counted nor stopped together."""
        note = (f"homeport: containers on this machine get no cgroup of their own ({reason}): the number of "
                "processes they start is not limited, and a process that leaves its container's process "
                "group (a double-forked daemon) may outlive the container\n")
        log.warning("container %s: %s", spec.container_id, note.strip())
        if spec.app_id not in self._told_uncontained:
            self._told_uncontained.add(spec.app_id)
            on_output(spec.container_id, 2, note.encode())

    async def _watch_pids(self) -> None:
        """Tell a container's app, as it happens, that forks in the container failed at its process limit."""
        try:
            while True:
                await asyncio.sleep(PIDS_CHECK_SECONDS)
                for proc in list(self._procs.values()):
                    self._check_pids(proc)
        except asyncio.CancelledError:
            pass

    def _check_pids(self, proc: _Proc) -> None:
        cgroup = proc.cgroup
        if cgroup is None or proc.pids_told:
            return
        hit = cgroup.pids_limit_hit()
        if hit > proc.pids_told:
            proc.pids_told = hit
            note = (f"homeport: this container reached its limit of {cgroup.pids_max} processes and threads: "
                    f"new ones fail (fork/clone: EAGAIN, 'Resource temporarily unavailable'; {hit} so far). "
                    f"The limit is the control plane's {ENV_PIDS_MAX} setting (0: none)\n")
            log.warning("container %s: %s", proc.spec.container_id, note.strip())
            proc.on_output(proc.spec.container_id, 2, note.encode())

    @staticmethod
    def _unlimited(spec: ContainerSpec, reason: str, on_output: OutputCallback) -> None:
        note = f"homeport: cpu and memory limits are NOT enforced for this container: {reason}\n"
        log.warning("container %s: %s", spec.container_id, note.strip())
        on_output(spec.container_id, 2, note.encode())

    async def _start(self, spec: ContainerSpec, on_output: OutputCallback, on_exit: ExitCallback,
                     cgroup: Cgroup | None) -> int:
        if spec.template is not None and self._scratch:
            try:
                return await self._fork(spec, dict(spec.env), on_output, on_exit, cgroup)
            except TemplateUnavailable as exc:
                self._without_template(spec, str(exc), on_output)
        return await self._spawn(spec, on_output, on_exit, cgroup)

    def _without_template(self, spec: ContainerSpec, reason: str, on_output: OutputCallback) -> None:
        """Say why this container starts as a fresh process: in the server log always, to the app's log
        once per app and template (its other containers start the same way, for the same reason)."""
        assert spec.template is not None
        what = "memory snapshot" if spec.template.definition is not None else "warm template"
        note = f"homeport: starting without the {what}: {reason}\n"
        log.warning("container %s: %s", spec.container_id, note.strip())
        told = (spec.app_id, spec.template.key)
        if told not in self._told:
            self._told.add(told)
            on_output(spec.container_id, 2, note.encode())

    def _visible(self, spec: ContainerSpec, reason: str, on_output: OutputCallback) -> None:
        """Say that the state directory is not hidden from this container: in the server log always,
        to the app's log once (its other containers start the same way)."""
        assert self._private is not None
        note = (f"homeport: the control plane's state directory ({self._private.path}) is visible to the "
                f"containers on this machine, its token and the key to every secret included: {reason}\n")
        log.warning("container %s: %s", spec.container_id, note.strip())
        if spec.app_id not in self._told_visible:
            self._told_visible.add(spec.app_id)
            on_output(spec.container_id, 2, note.encode())

    async def _bwrap_hides(self) -> str | None:
        """None, or why bubblewrap cannot hide the state directory on this machine (asked once)."""
        if self._bwrap_problem is False:
            assert self._private is not None
            self._bwrap_problem = await _sandbox.bwrap_fails(hide=_private.plan(self._private))
        assert self._bwrap_problem is not False
        return self._bwrap_problem

    async def _private_network(self, spec: ContainerSpec) -> str | None:
        """None when the container gets the network of its own it asks for, else why not (asked once):
        bubblewrap may be missing, or installed on a kernel that does not let it make namespaces, where
        every such container would fail to start."""
        if not spec.private_network or spec.rootfs:  # a root file system's `unshare --net` needs no bubblewrap
            return None
        if self._network_problem is False:
            self._network_problem = ("bubblewrap is not installed" if shutil.which("bwrap") is None
                                     else await _sandbox.bwrap_fails(private_network=True))
        assert self._network_problem is not False
        return self._network_problem

    async def _spawn(self, spec: ContainerSpec, on_output: OutputCallback, on_exit: ExitCallback,
                     cgroup: Cgroup | None = None) -> int:
        env = dict(spec.env)
        tmp = self._tmpdir(spec)
        if tmp is not None:
            env["TMPDIR"] = tmp
        # A root file system holds only what is bound into it: nothing of the state directory to hide.
        own = () if spec.rootfs else tuple(_private.own_entries(self._private, spec.container_id))
        hide = None if spec.rootfs else _private.plan(self._private, [*([tmp] if tmp else []), *own], container=True)
        problem = None if hide is None else await self._bwrap_hides()
        if problem is not None:  # it still runs, as it would without a state directory to hide
            hide = None
        network_problem = await self._private_network(spec)
        if network_problem is not None:  # it still runs, in the machine's network (the runtime checks its port)
            spec = dataclasses.replace(spec, private_network=False)
        # Set here, where it is known to be true: a web server without it makes sure its port is its own.
        if spec.private_network:
            env[P.ENV_PRIVATE_NETWORK] = "1"
        else:
            env.pop(P.ENV_PRIVATE_NETWORK, None)
        dev = _gpu.container_dev(spec.gpus)  # None: no GPU node on this host to keep from it
        if dev is not None and not spec.rootfs and shutil.which("bwrap"):
            if getattr(self, "_dev_problem", False) is False:  # asked once: can bubblewrap build a /dev here?
                self._dev_problem = await _sandbox.bwrap_fails(dev=dev)
                if self._dev_problem is not None:
                    log.warning("containers see every GPU node of this machine (only CUDA_VISIBLE_DEVICES keeps "
                                "them to their own): %s", self._dev_problem)
            if self._dev_problem is not None:
                dev = None
        env = _gpu.library_env(env, spec.gpus)
        spec = dataclasses.replace(spec, mounts=_gpu.with_driver(spec.mounts, spec.rootfs, spec.gpus))
        isolate = self._spawn_isolation(spec, hide, tmp, own)
        if isolate is not None:
            env[P.ENV_ISOLATE] = json.dumps(isolate)
        uid = self._rootfs_uid(spec)
        if uid is not None:  # its own user in its own root: its web sockets' directory its only one there
            spec = _rootfs.own_web_entry(spec)
        try:
            argv = _sandbox.command(spec, hide, dev, isolates_itself=isolate is not None, uid=uid)
        except _sandbox.SandboxUnavailable as exc:
            raise RuntimeError(str(exc)) from None
        if network_problem is not None:
            note = _sandbox.network_note(network_problem)
            log.warning("container %s: %s", spec.container_id, note.strip())
            on_output(spec.container_id, 2, note.encode())
        if problem is not None:
            self._visible(spec, problem, on_output)
        if cgroup is not None:  # a shell that joins the cgroup, then execs the sandbox and the runtime
            argv = cgroup.joining(argv)
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            # A sandbox changes to `spec.cwd` inside its own view, where it may exist only (an image's workdir).
            cwd=None if _sandbox.sandboxed(spec, hide, dev) else spec.cwd,
            start_new_session=True,  # its own process group, so stop() reaches its children too
        )
        proc = _Proc(spec, process.pid, on_exit, on_output)
        proc.process = process
        proc.cgroup = cgroup
        proc.scratch = tmp
        proc.sandboxed = _sandbox.sandboxed(spec, hide, dev)
        self._procs[spec.container_id] = proc
        for fd, stream in ((1, process.stdout), (2, process.stderr)):
            assert stream is not None  # both are pipes
            proc.pumps.append(asyncio.create_task(self._pump(spec.container_id, fd, stream, on_output)))
        self._spawn_task(self._wait_spawned(proc))
        return process.pid

    def _spawn_isolation(self, spec: ContainerSpec, hide: _private.Plan | None, tmp: str | None,
                         own: tuple[str, ...]) -> dict | None:
        """What a spawned container's runtime is told to do to isolate itself as a forked container
        does (`homeport.runtime._spawned`), or None: only under bubblewrap (which hides the state
        directory and gives it its PID namespace), when the control plane is root and isolation is on;
        not for an image build step nor a root file system image (whose root is mapped by `unshare`)."""
        settings = isolation_settings()
        if (hide is None or settings is None or settings["uid"] is None or os.geteuid() != 0
                or spec.rootfs or spec.host_read_only):
            return None
        return {"uid": self._uid(spec.container_id) or settings["uid"], "hidden": hide["dir"],
                "needed": needed_paths(self._private, spec.mounts, tmp, spec.cwd, spec.code, own)}

    def _rootfs_uid(self, spec: ContainerSpec) -> int | None:
        """The host user a root file system image's container becomes (`_rootfs.isolated_root`), or None."""
        settings = isolation_settings()
        if not spec.rootfs or settings is None or settings["uid"] is None:
            return None
        uid = self._uid(spec.container_id) or settings["uid"]
        return uid if _rootfs.isolated_root(spec.rootfs, uid) else None

    def _ensure_templates(self) -> Templates:
        if self._templates is None:
            assert self._scratch is not None  # its callers use templates only with a scratch directory
            pool = SparePool(self._cgroups, self._empty) if _spares.enabled() else None
            self._templates = Templates(self._scratch, self._on_forked_exit, self._private, pool)
            self._schedule_sweep()
        return self._templates

    async def prepare(self, template: TemplateSpec) -> None:
        if not self._scratch:
            return
        tag = template.key[:12]

        def sink(fd: int, line: bytes) -> None:  # no container waits for it: its output goes to the log
            log.info("template %s: %s", tag, line.decode(errors="replace").rstrip())

        try:
            await self._ensure_templates().warm(template, sink)
        except TemplateUnavailable as exc:
            log.warning("template %s not prepared: %s", tag, exc)

    async def _fork(self, spec: ContainerSpec, env: dict[str, str], on_output: OutputCallback,
                    on_exit: ExitCallback, cgroup: Cgroup | None = None, spare: Spare | None = None) -> int:
        assert spec.template is not None
        templates = self._ensure_templates()
        cid = spec.container_id
        # A template started for this container prints as part of it, marked as the template's: a
        # snapshot's imports and snap hooks (their prints, a traceback when the snapshot fails).
        prefix = b"[snapshot] " if spec.template.definition is not None else b"[template] "

        def sink(fd: int, line: bytes) -> None:
            on_output(cid, fd, prefix + line)

        cwd = spec.cwd
        if spec.rootfs:  # inside the image's own root, with a private /tmp (its own writable layer)
            cwd = _rootfs.working_dir(spec.rootfs)
            env["TMPDIR"] = "/tmp"
        loop = asyncio.get_running_loop()
        readers = []
        writers = []
        for _ in (1, 2):
            r, w = os.pipe()
            readers.append(r)
            writers.append(w)
        place = None
        if cgroup is not None and spare is None:
            async def place(pid: int) -> None:  # the copy waits for this before it runs anything
                try:  # in a thread: the kernel may take ~10 ms over it, which the event loop must not wait for
                    await asyncio.to_thread(cgroup.add, pid)
                except OSError as exc:
                    self._unlimited(spec, f"it could not join its cgroup ({exc})", on_output)

        try:
            forked = await templates.fork(spec.template, cid, env, cwd, writers[0], writers[1], sink=sink, place=place,
                                          code=spec.code, uid=self._uid(cid), spare=spare)
        except BaseException:
            for fd in readers:
                os.close(fd)
            raise
        finally:
            for fd in writers:
                os.close(fd)
        if forked.visible is not None:
            self._visible(spec, forked.visible, on_output)
        for note in forked.isolation:  # what this machine does not allow: once per app
            if (spec.app_id, note) not in self._told_isolation:
                self._told_isolation.add((spec.app_id, note))
                log.warning("container %s: %s", cid, note)
                on_output(cid, 2, f"homeport: {note}\n".encode())
        pid = forked.pid
        proc = _Proc(spec, pid, on_exit, on_output)
        proc.scratch = forked.scratch
        proc.cgroup = cgroup
        if cgroup is not None:
            self._watch(cgroup)
        self._procs[spec.container_id] = proc
        for fd, r in zip((1, 2), readers):
            reader = asyncio.StreamReader(limit=1 << 20)
            await loop.connect_read_pipe(functools.partial(asyncio.StreamReaderProtocol, reader), _pipe_file(loop, r))
            proc.pumps.append(asyncio.create_task(self._pump(spec.container_id, fd, reader, on_output)))
        return pid

    def _schedule_sweep(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(SWEEP_SECONDS, self._sweep)

    def _sweep(self) -> None:
        if self._templates is not None:
            self._templates.sweep(time.monotonic())
            self._schedule_sweep()

    async def _pump(self, cid: str, fd: int, stream: asyncio.StreamReader, on_output: OutputCallback) -> None:
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # a line longer than the limit: pass it on in pieces
                line = await stream.read(1 << 16)
            if not line:
                return
            on_output(cid, fd, line)

    async def _wait_spawned(self, proc: _Proc) -> None:
        assert proc.process is not None  # a spawned container, not a forked one
        rc = await proc.process.wait()
        if proc.sandboxed and rc > 128:  # bubblewrap reports a killed child as 128 + signal
            rc = -(rc - 128)
        await self._finish(proc, ExitInfo(rc, -rc) if rc < 0 else ExitInfo(rc, None))

    def _on_forked_exit(self, cid: str, code: int | None) -> None:
        proc = self._procs.get(cid)
        if proc is None:
            return
        info = ExitInfo(None, None) if code is None else ExitInfo(code, -code) if code < 0 else ExitInfo(code, None)
        self._spawn_task(self._finish(proc, info))

    async def _finish(self, proc: _Proc, info: ExitInfo) -> None:
        if proc.exited:
            return
        proc.exited = True
        if proc.kill_timer is not None:
            proc.kill_timer.cancel()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the container's process group
        # and of the container, wherever they went (a setsid daemon); an empty cgroup is left as it is
        # (nothing in it can start anything: writing its kill file twice cost ~1-3 ms an exit)
        if proc.cgroup is not None and proc.cgroup.members():
            await self._empty(proc.cgroup)
        # Drain the pipes before reporting the exit, so the last lines are not lost.
        await asyncio.wait(proc.pumps, timeout=5)
        for task in proc.pumps:
            task.cancel()
        self._procs.pop(proc.spec.container_id, None)
        if proc.cgroup is not None:
            self._check_pids(proc)
            if info.signal == signal.SIGKILL and proc.cgroup.oom_killed():
                info = ExitInfo(info.returncode, info.signal, oom_limit_mib=proc.spec.memory_limit_mib)
        self._uids.pop(proc.spec.container_id, None)  # nothing of it runs any more: its user is free
        proc.on_exit(proc.spec.container_id, info)
        # What it leaves goes once the control plane knows, off its loop: removing the cgroup and the
        # directories took ~6 ms a container, on the loop and on every `app.run()`'s way out.
        task = asyncio.create_task(asyncio.to_thread(self._remove_leftovers, proc))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    def _remove_leftovers(self, proc: _Proc) -> None:
        """An exited container's cgroup (emptied), scratch directory and entries in the shared directories."""
        if proc.cgroup is not None:
            proc.cgroup.remove()
        if proc.scratch:
            shutil.rmtree(proc.scratch, ignore_errors=True)
        _private.remove_own_entries(self._private, proc.spec.container_id)
        web = os.path.dirname(proc.spec.env.get(P.ENV_WEB_SOCKET) or "")
        if os.path.basename(web) == proc.spec.container_id:  # its web sockets' own directory, wherever it is
            shutil.rmtree(web, ignore_errors=True)

    def _kill_group(self, proc: _Proc, sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            # No group yet: a copy forked from a template makes its own group first thing, and a signal
            # sent before that must reach it all the same (it was lost, and the copy ran on).
            if not proc.exited:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(proc.pid, sig)
        except PermissionError:
            pass
        if sig == signal.SIGKILL and proc.cgroup is not None:
            proc.cgroup.kill()  # everything the container started, in its process group or not

    @staticmethod
    async def _empty(cgroup: Cgroup, timeout: float = 5.0) -> None:
        """Kill what is left in a container's cgroup and wait (a little) until it is gone, so the
        cgroup can be removed."""
        deadline = time.monotonic() + timeout
        while cgroup.kill() and cgroup.members() and time.monotonic() < deadline:  # noqa: ASYNC110 - the kernel empties it, no event says so
            await asyncio.sleep(0.01)

    async def stop(self, container_id: str, grace: float) -> None:
        proc = self._procs.get(container_id)
        if proc is None or proc.exited:
            return
        self._kill_group(proc, signal.SIGTERM)  # the group: it reaches a sandboxed runtime too
        loop = asyncio.get_running_loop()
        proc.kill_timer = loop.call_later(grace, self._kill_group, proc, signal.SIGKILL)

    async def kill(self, container_id: str) -> None:
        proc = self._procs.get(container_id)
        if proc is not None:
            self._kill_group(proc, signal.SIGKILL)

    async def close(self, grace: float) -> None:
        procs = list(self._procs.values())
        for p in procs:
            await self.stop(p.spec.container_id, grace)
        deadline = time.monotonic() + grace + 5
        while self._procs and time.monotonic() < deadline:  # noqa: ASYNC110 - exits arrive as callbacks
            await asyncio.sleep(0.05)
        for p in list(self._procs.values()):
            self._kill_group(p, signal.SIGKILL)
        if self._cleanups:
            await asyncio.wait(self._cleanups, timeout=10)
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._pids_watch is not None:
            self._pids_watch.cancel()
        if self._templates is not None:
            await self._templates.close()

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "templates": self._templates is not None}
