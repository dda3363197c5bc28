"""`modal.container_process.ContainerProcess`: a command running in a sandbox (`Sandbox.exec`)."""

from __future__ import annotations

import asyncio
from typing import Any

from . import _protocol as P
from ._bridge import MethodWithAio
from ._session import connection_lost
from .exception import InvalidError, UnimplementedError
from .io_streams import StreamReader, StreamWriter

__all__ = ["ContainerProcess"]

ACK_EVERY = 1 << 20  # consumed bytes of a stream acknowledged at once (the agent's window is 8 MiB)


class _Flow:
    """Tells the sandbox's agent how much of each stream this process's reader consumed, so that it reads
    on (its window, `_sandbox_agent.WINDOW`): a reader that falls behind holds the command back instead of
    filling memory here, in the control plane or in the agent. Once `wait()` is called the output is
    taken as it arrives (kept here for a later `read()`), so waiting without reading never blocks."""

    def __init__(self, client: Any, sandbox_id: str, exec_id: str) -> None:
        self._client = client
        self._sandbox_id = sandbox_id
        self._exec_id = exec_id
        self.unread = {1: 0, 2: 0}  # received, not consumed
        self.pending = {1: 0, 2: 0}  # consumed, not acknowledged
        self.eager = False

    def received(self, fd: int, n: int) -> None:
        if self.eager:
            self._ack(fd, n)
        else:
            self.unread[fd] += n

    def consumed(self, fd: int, n: int) -> None:
        if self.eager:
            return
        self.unread[fd] -= n
        self.pending[fd] += n
        if self.pending[fd] >= ACK_EVERY:
            self._ack(fd, self.pending[fd])
            self.pending[fd] = 0

    def release(self) -> None:
        if self.eager:
            return
        self.eager = True
        for fd in (1, 2):
            if self.unread[fd] + self.pending[fd]:
                self._ack(fd, self.unread[fd] + self.pending[fd])
            self.unread[fd] = self.pending[fd] = 0

    def _ack(self, fd: int, n: int) -> None:
        self._client.send(P.SandboxAck(sandbox=self._sandbox_id, exec=self._exec_id, fd=fd, n=n))  # type: ignore[arg-type]

    def source(self, queue: asyncio.Queue, fd: int) -> Any:
        async def next_chunk() -> bytes | None:
            data = await queue.get()
            if data is not None:
                self.consumed(fd, len(data))
            return data

        return next_chunk


class ContainerProcess:
    """`stdout`, `stderr` (`StreamReader`), `stdin` (`StreamWriter`), `wait()`, `poll()`, `returncode`.

    `returncode` is known once `wait()` or `poll()` has seen the exit: a process killed by a signal
    returns 128 + the signal's number, one that ran past its `timeout` -1.
    """

    def __init__(self, client: Any, sandbox_id: str, exec_id: str, queues: dict[int, asyncio.Queue],
                 exited: asyncio.Future, text: bool, by_line: bool, piped: dict[int, bool], flow: _Flow) -> None:
        self._client = client
        self._sandbox_id = sandbox_id
        self._exec_id = exec_id
        self._exited = exited
        self._flow = flow
        self._returncode: int | None = None
        self.stdout = StreamReader(flow.source(queues[1], 1) if piped[1] else None, text, by_line)
        self.stderr = StreamReader(flow.source(queues[2], 2) if piped[2] else None, text, by_line)
        self.stdin = StreamWriter(self._send_stdin)
        self.wait = MethodWithAio(self._wait, "wait")
        self.poll = MethodWithAio(self._poll, "poll")

    @property
    def object_id(self) -> str:
        return self._exec_id

    async def _send_stdin(self, data: bytes, eof: bool) -> None:
        self._client.send(P.SandboxStdin(sandbox=self._sandbox_id, exec=self._exec_id, data=data, eof=eof))
        await self._client.proto.drain()

    async def _wait(self) -> int:
        self._flow.release()
        code = await asyncio.shield(self._exited)
        self._returncode = code
        return code

    async def _poll(self) -> int | None:
        if self._exited.done():
            return await self._wait()
        return None

    @property
    def returncode(self) -> int:
        if self._returncode is None:
            raise InvalidError("You must call wait() before accessing the returncode. "
                               "To poll for the status of a running process, use poll() instead.")
        return self._returncode

    def attach(self, *args: Any, **kwargs: Any) -> None:
        raise UnimplementedError("ContainerProcess.attach (an interactive terminal) is not built in Homeport")


def watch_exec(client: Any, sandbox_id: str, exec_id: str) -> tuple[dict[int, asyncio.Queue], asyncio.Future, _Flow]:
    """Queues that receive the exec's output as it arrives (None at the end), a future of its exit code
    and what acknowledges the output read; call on the bridge loop, before the exec starts."""
    queues: dict[int, asyncio.Queue[bytes | None]] = {1: asyncio.Queue(), 2: asyncio.Queue()}
    exited = asyncio.get_running_loop().create_future()
    flow = _Flow(client, sandbox_id, exec_id)

    def handler(kind: str, items: list) -> None:
        if kind == "closed":
            for q in queues.values():
                q.put_nowait(None)
            if not exited.done():
                exited.set_exception(connection_lost())
            return
        for msg in items:
            if kind == P.SANDBOX_OUT:
                queues[msg.fd].put_nowait(msg.data)
                flow.received(msg.fd, len(msg.data))
            else:
                for q in queues.values():
                    q.put_nowait(None)
                if not exited.done():
                    exited.set_result(msg.code)
                client.unwatch_call(exec_id)

    client.watch_call(exec_id, handler)
    return queues, exited, flow
