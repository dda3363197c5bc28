"""The agent inside a sandbox: runs its command and its execs, streams their output, serves its files.

`python -m homeport.runtime._sandbox_agent`, started by the control plane as the sandbox container's
process. It connects back (hello role "sandbox"), then answers `SANDBOX_AGENT` requests: `exec`
(a process with pipes or a pty; each chunk of output is sent as soon as it is read), `stdin`, `fs`
(file operations in the container's own view) and `probe`. It is the sandbox's child subreaper, so
that what an exec leaves running (daemons, `setsid`) is its descendant, and on SIGTERM it kills every
descendant before it leaves. It exits with its command's exit code, or sleeps until it is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import stat as _stat
import sys
from typing import Any

from .. import _protocol as P
from .._wire import FramedProtocol, relay

PR_SET_CHILD_SUBREAPER = 36
CHUNK = 1 << 20  # what one read returns: all that is there, up to this
# Of an exec's stream, sent and not yet acknowledged by its reader: past it the agent stops reading the
# pipe (and the process blocks writing to it) until the client says it consumed some. So a reader that
# falls behind holds no more than this in the agent, the control plane and its own queue.
WINDOW = 8 << 20


def _subreaper() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _descendants() -> list[int]:
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
            parent[int(entry)] = int(data[data.rindex(b")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    out: list[int] = []
    frontier = [os.getpid()]
    while frontier:
        pid = frontier.pop()
        kids = [c for c, p in parent.items() if p == pid]
        out += kids
        frontier += kids
    return out


def kill_descendants() -> None:
    for _ in range(3):  # what forks while it is being killed is found on the next pass
        pids = _descendants()
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


class _Exec:
    def __init__(self, agent: Agent, exec_id: str) -> None:
        self.agent = agent
        self.id = exec_id
        self.process: asyncio.subprocess.Process | None = None
        self.master: int | None = None  # the pty's master side
        self.timed_out = False
        self.unacked = {1: 0, 2: 0}  # bytes sent per stream and not yet acknowledged
        self.acked = asyncio.Event()
        self.flow = exec_id != P.SANDBOX_MAIN  # the command's own output is kept by the control plane

    async def sent(self, fd: int, n: int) -> None:
        """Count what was sent; wait while the stream's reader is a window behind."""
        if not self.flow:
            return
        self.unacked[fd] += n
        while self.flow and self.unacked[fd] >= WINDOW:
            self.acked.clear()
            await self.acked.wait()

    def ack(self, fd: int, n: int) -> None:
        self.unacked[fd] = max(0, self.unacked[fd] - n)
        self.acked.set()


class Agent:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.proto: FramedProtocol | None = None
        self.execs: dict[str, _Exec] = {}
        self.done = asyncio.get_running_loop().create_future()
        self.tasks: set[asyncio.Task] = set()

    def send(self, msg: P.Message) -> None:
        assert self.proto is not None
        self.proto.send(msg)

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # --- messages --------------------------------------------------------------------------------------
    def on_message(self, raw: Any) -> None:
        try:
            msg = P.check_to_agent(raw)
        except P.MalformedMessage as exc:
            rid = raw.get("id") if isinstance(raw, dict) else None
            if isinstance(rid, (int, str)):
                self.send(P.Result(id=rid, ok=False, code=P.errors.INVALID, msg=str(exc)))
            return
        if isinstance(msg, P.AgentStdin):
            ex = self.execs.get(msg.exec)
            if ex is not None:
                self._stdin(ex, msg.data, msg.eof)
        elif isinstance(msg, P.AgentAck):
            ex = self.execs.get(msg.exec)
            if ex is not None and msg.fd in (1, 2):
                ex.ack(msg.fd, msg.n)
        elif isinstance(msg, P.AgentUnwatched):  # its reader is gone: it runs on, its output dropped upstream
            ex = self.execs.get(msg.exec)
            if ex is not None:
                ex.flow = False
                ex.acked.set()
        elif isinstance(msg, (P.AgentExec, P.AgentFs, P.AgentProbe)):
            self.spawn(self._answer(msg))

    async def _answer(self, msg: P.AgentExec | P.AgentFs | P.AgentProbe) -> None:
        try:
            value: Any = None
            if isinstance(msg, P.AgentExec):
                await self.start_exec(msg)
            elif isinstance(msg, P.AgentFs):
                value = filesystem(msg)
            else:
                value = await probe(msg)
        except FsError as exc:
            self.send(P.Result(id=msg.id, ok=False, code=exc.code, msg=str(exc)))
        except Exception as exc:
            self.send(P.Result(id=msg.id, ok=False, code=P.errors.INVALID, msg=f"{type(exc).__name__}: {exc}"))
        else:
            self.send(P.Result(id=msg.id, ok=True, v=value))

    # --- processes -----------------------------------------------------------------------------------
    async def start_exec(self, msg: P.AgentExec) -> None:
        exec_id = msg.exec
        env = dict(os.environ)
        for key in (P.ENV_SANDBOX, P.ENV_CONTAINER_TOKEN, P.ENV_SERVER_ADDRESS):
            env.pop(key, None)
        env.update(msg.env or {})
        workdir = msg.workdir or None
        if not msg.argv:
            raise ValueError("an exec needs a command (argv is empty)")
        ex = _Exec(self, exec_id)
        modes = {"pipe": asyncio.subprocess.PIPE, "devnull": asyncio.subprocess.DEVNULL,
                 "stdout": asyncio.subprocess.STDOUT}
        if msg.pty:
            master, slave = os.openpty()
            ex.master = master
            stdin = stdout = stderr = slave
        else:
            stdin = asyncio.subprocess.PIPE
            stdout = modes[msg.stdout]
            stderr = modes[msg.stderr]
            if stdout == asyncio.subprocess.STDOUT:
                stdout = asyncio.subprocess.PIPE
        try:
            ex.process = await asyncio.create_subprocess_exec(
                *msg.argv, stdin=stdin, stdout=stdout, stderr=stderr, env=env, cwd=workdir,
                start_new_session=True)
        except FileNotFoundError as exc:
            if ex.master is not None:
                os.close(ex.master)
                os.close(slave)
            what = exc.filename if exc.filename and exc.filename != workdir else msg.argv[0]
            if workdir and not os.path.isdir(workdir):  # noqa: ASYNC240 - one stat, after a failure
                raise ValueError(f"workdir {workdir} does not exist in the sandbox") from None
            raise ValueError(f"no such command in the sandbox: {what}") from None
        finally:
            if msg.pty:
                with contextlib.suppress(OSError):
                    os.close(slave)
        self.execs[exec_id] = ex
        pumps = []
        if ex.master is not None:
            pumps.append(self._pump_fd(ex, 1, ex.master))
        else:
            for fd, stream in ((1, ex.process.stdout), (2, ex.process.stderr)):
                if stream is not None:
                    pumps.append(self._pump(ex, fd, stream))
        self.spawn(self._run(ex, pumps, msg.timeout))

    def _stdin(self, ex: _Exec, data: bytes, eof: bool) -> None:
        if ex.master is not None:
            if data:
                with contextlib.suppress(OSError):
                    os.write(ex.master, data)
            if eof:
                with contextlib.suppress(OSError):
                    os.write(ex.master, b"\x04")
            return
        stdin = ex.process.stdin if ex.process is not None else None
        if stdin is None or stdin.is_closing():
            return
        with contextlib.suppress(OSError, RuntimeError):
            if data:
                stdin.write(data)
            if eof:
                stdin.close()

    async def _pump(self, ex: _Exec, fd: int, stream: asyncio.StreamReader) -> None:
        # asyncio's pipe reader stops reading the pipe while its buffer (64 KiB) is full: nothing
        # more is read while this waits for the window or for the connection to drain.
        while data := await stream.read(CHUNK):
            self.send(P.SandboxOut(exec=ex.id, fd=fd, data=data))
            await self._drained()
            await ex.sent(fd, len(data))

    async def _pump_fd(self, ex: _Exec, fd: int, master: int) -> None:
        """A pty's output: read only when there is room (its reader is within the window)."""
        loop = asyncio.get_running_loop()

        def wake(fut: asyncio.Future[None]) -> None:
            if not fut.done():
                fut.set_result(None)

        try:
            while True:
                ready: asyncio.Future[None] = loop.create_future()
                loop.add_reader(master, wake, ready)
                try:
                    await ready
                finally:
                    loop.remove_reader(master)
                try:
                    data = os.read(master, CHUNK)
                except OSError:
                    data = b""
                if not data:
                    return
                self.send(P.SandboxOut(exec=ex.id, fd=fd, data=data))
                await self._drained()
                await ex.sent(fd, len(data))
        finally:
            os.close(master)

    async def _drained(self) -> None:
        """Wait while the connection to the control plane has more queued than it takes."""
        if self.proto is not None:
            await self.proto.drain()

    async def _run(self, ex: _Exec, pumps: list, timeout: float | None) -> None:
        assert ex.process is not None
        tasks = [asyncio.ensure_future(p) for p in pumps]
        try:
            code = await asyncio.wait_for(ex.process.wait(), timeout) if timeout else await ex.process.wait()
        except asyncio.TimeoutError:
            ex.timed_out = True
            with contextlib.suppress(OSError):
                os.killpg(ex.process.pid, signal.SIGKILL)
            await ex.process.wait()
            code = -1
        else:
            if code < 0:
                code = 128 - code
        if tasks:  # the last output before the exit (a background child may hold the pipe: not forever)
            _done, pending = await asyncio.wait(tasks, timeout=2)
            for task in pending:
                task.cancel()
        self.execs.pop(ex.id, None)
        self.send(P.SandboxExit(exec=ex.id, code=code))
        if ex.id == P.SANDBOX_MAIN and not self.done.done():
            self.done.set_result(code)


# --- files -----------------------------------------------------------------------------------------
class FsError(Exception):
    def __init__(self, code: str, msg: str) -> None:
        super().__init__(msg)
        self.code = code


def _fs_error(exc: OSError, path: str) -> FsError:
    import errno

    kinds = {errno.ENOENT: "fs_not_found", errno.EISDIR: "fs_is_a_directory", errno.ENOTDIR: "fs_not_a_directory",
             errno.EACCES: "fs_permission", errno.EPERM: "fs_permission", errno.EROFS: "fs_permission",
             errno.ENOTEMPTY: "fs_directory_not_empty", errno.EEXIST: "fs_exists"}
    return FsError(kinds.get(exc.errno or 0, "fs"), f"{path}: {exc.strerror or exc}")


def _entry(path: str, st: os.stat_result) -> P.FileEntry:
    kind: P.FileKind = "directory" if _stat.S_ISDIR(st.st_mode) else "symlink" if _stat.S_ISLNK(st.st_mode) else "file"
    return P.FileEntry(path=path, type=kind, size=st.st_size, mtime=st.st_mtime, mode=st.st_mode)


def filesystem(msg: P.AgentFs) -> Any:
    action, path = msg.action, msg.path
    try:
        if action == "read":
            with open(path, "rb") as f:
                return f.read()
        if action == "write":
            with open(path, "wb") as f:
                f.write(msg.data or b"")
            return None
        if action == "list":
            return [_entry(os.path.join(path, name), os.lstat(os.path.join(path, name)))
                    for name in sorted(os.listdir(path))]
        if action == "mkdir":
            if msg.parents:
                os.makedirs(path, exist_ok=True)
            else:
                os.mkdir(path)
            return None
        if action == "remove":
            if os.path.isdir(path) and not os.path.islink(path):
                if msg.recursive:
                    import shutil

                    shutil.rmtree(path)
                else:
                    os.rmdir(path)
            else:
                os.unlink(path)
            return None
        if action == "stat":
            return _entry(path, os.stat(path))
    except OSError as exc:
        raise _fs_error(exc, path) from None
    raise ValueError(f"unknown file operation {action!r}")


async def probe(msg: P.AgentProbe) -> bool:
    """Whether the readiness probe passes now."""
    if msg.port:
        try:
            _r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", msg.port), 2)
        except (OSError, asyncio.TimeoutError):
            return False
        w.close()
        return True
    if not msg.argv:
        raise ValueError("a readiness probe needs a TCP port or a command")
    proc = await asyncio.create_subprocess_exec(*msg.argv, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                                                start_new_session=True)
    return await proc.wait() == 0


# --- tunnels ---------------------------------------------------------------------------------------
async def _serve_tunnel(port: int, path: str) -> asyncio.AbstractServer:
    async def bridge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await relay(reader, writer, lambda: asyncio.open_connection("127.0.0.1", port), CHUNK)

    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return await asyncio.start_unix_server(bridge, path)


async def _serve_egress(egress: dict[str, Any]) -> asyncio.AbstractServer:
    """The sandbox's end of its egress proxy (`homeport.server.egress`): a port on its own loopback,
    each connection relayed to the control plane's proxy after the sandbox's token."""
    token = egress["token"].encode() + b"\n"

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_unix_connection(egress["socket"])
        writer.write(token)
        return reader, writer

    async def bridge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await relay(reader, writer, connect, CHUNK)

    return await asyncio.start_server(bridge, "127.0.0.1", int(egress["port"]))



async def amain() -> int:
    config = json.loads(os.environ[P.ENV_SANDBOX])
    loop = asyncio.get_running_loop()
    agent = Agent(config)
    private = os.environ.get(P.ENV_PRIVATE_NETWORK) == "1"
    if config.get("network_required") and not private:
        # The backend could not give it a network of its own: never run it with the machine's network.
        print("homeport: block_network=True and the outbound allowlists need a network namespace, which this "
              "machine cannot make (install bubblewrap on a kernel that allows user namespaces)",
              file=sys.stderr, flush=True)
        return 1
    if private:
        from ._web import loopback_up

        loopback_up()  # `unshare --net` (an image's own root file system) leaves it down
    workdir = config.get("workdir")
    if workdir:
        try:
            os.makedirs(workdir, exist_ok=True)
            os.chdir(workdir)
        except OSError as exc:
            print(f"homeport: the sandbox's workdir {workdir} cannot be used: {exc}", file=sys.stderr, flush=True)
            return 1
    closed = loop.create_future()

    def on_close(_exc: Exception | None) -> None:
        if not closed.done():
            closed.set_result(None)

    proto = FramedProtocol(agent.on_message, on_close)
    replies: asyncio.Queue = asyncio.Queue()
    hello_done = False

    def first(msg: Any) -> None:
        nonlocal hello_done
        if not hello_done:
            hello_done = True
            replies.put_nowait(msg)
        else:
            agent.on_message(msg)

    proto._on_message = first
    await loop.create_unix_connection(lambda: proto, os.environ[P.ENV_SERVER_ADDRESS])
    agent.proto = proto
    proto.send(P.Hello(role="sandbox", cid=os.environ[P.ENV_CONTAINER_ID], token=os.environ[P.ENV_CONTAINER_TOKEN],
                       v=P.PROTOCOL_VERSION, id=0))
    try:
        reply = P.check_to_agent(await replies.get())
    except P.MalformedMessage as exc:
        print(f"homeport: the control plane's answer to the sandbox agent is malformed: {exc}", file=sys.stderr,
              flush=True)
        return 1
    if not isinstance(reply, P.Result) or not reply.ok:
        print(f"homeport: the control plane refused the sandbox agent: {getattr(reply, 'msg', reply)}",
              file=sys.stderr, flush=True)
        return 1
    for key in (P.ENV_CONTAINER_TOKEN, P.ENV_SANDBOX):
        os.environ.pop(key, None)
    servers = [await _serve_tunnel(int(port), path) for port, path in (config.get("tunnels") or {}).items()]
    if private and config.get("egress"):  # without a network of its own it has the machine's, no proxy
        servers.append(await _serve_egress(config["egress"]))
        os.environ.update(config["egress"]["env"])
    if config.get("argv"):
        await agent.start_exec(P.AgentExec(exec=P.SANDBOX_MAIN, argv=list(config["argv"]), pty=bool(config.get("pty"))))
    proto.send(P.Ready())
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, lambda: None if stop.done() else stop.set_result(None))
    await asyncio.wait([agent.done, stop, closed], return_when=asyncio.FIRST_COMPLETED)
    for server in servers:
        server.close()
    kill_descendants()
    if agent.done.done():
        await proto.drain()
        return agent.done.result() & 0xFF if agent.done.result() >= 0 else 1
    return 143


def main() -> None:
    _subreaper()
    code = asyncio.run(amain())
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
