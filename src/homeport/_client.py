"""The SDK's connection to the control plane. Lives on the bridge loop; one per process."""

from __future__ import annotations

import asyncio
import collections
import itertools
import sys
import time
from collections.abc import Callable
from typing import Any

from . import _address, _config, _launcher
from . import _protocol as P
from ._bridge import bridge_loop
from ._liveness import SilenceWatch
from ._session import connection_lost, could_not_connect, hello_message, hello_refused
from ._wire import FramedProtocol
from .exception import AuthError, ConnectionError, error_from_code

_monotonic = time.monotonic
_PING, _PONG = P.Ping(), P.Pong()
OutputHandler = Callable[[str, list], None]  # (message type, items)


class Client:
    _instance: Client | None = None
    _connect_lock: asyncio.Lock | None = None

    def __init__(self, proto: FramedProtocol) -> None:
        self.proto = proto
        self._ids = itertools.count(1)
        self._pending: dict[P.RequestId, asyncio.Future] = {}
        self._calls: dict[str, OutputHandler] = {}
        self.log_handler: Callable[[dict[str, Any]], None] | None = None
        self.closed = False
        self.address = _config.client_address()
        self.last_heard = time.monotonic()  # any message from the control plane (see `_watchdog`)
        self._watchdog_task: asyncio.Task | None = None
        self._failed = False  # what waited was failed (the connection closed or went silent)

    # --- connecting --------------------------------------------------------------------------------
    @classmethod
    async def get(cls) -> Client:
        """The process's client, connecting (and starting the embedded control plane) on first use."""
        inst = cls._instance
        if inst is not None and not inst.closed and inst.address == _config.client_address():
            return inst
        if cls._connect_lock is None:
            cls._connect_lock = asyncio.Lock()
        async with cls._connect_lock:
            inst = cls._instance
            if inst is not None and not inst.closed and inst.address != _config.client_address():
                # The configured control plane changed (another state directory): use that one.
                inst.proto.close()
                inst.closed = True
            if cls._instance is None or cls._instance.closed:
                cls._instance = await cls._connect()
            return cls._instance

    @classmethod
    async def _connect(cls) -> Client:

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, _launcher.ensure_server)
        token = _config.read_token() or ""
        holder: list[Client] = []
        proto_ref: list[FramedProtocol] = []

        def on_message(msg: Any) -> None:
            holder[0]._on_message(msg)

        def on_close(exc: Exception | None) -> None:
            if holder:
                holder[0]._on_close()

        def factory() -> FramedProtocol:
            proto_ref.append(FramedProtocol(on_message, on_close, P.decode_to_client))
            return proto_ref[0]

        address = _config.client_address()
        try:
            await asyncio.wait_for(_address.open_connection(factory, address), 10)
        except (OSError, asyncio.TimeoutError) as exc:
            raise could_not_connect(address, exc) from None
        client = cls(proto_ref[0])
        holder.append(client)
        client._watchdog_task = loop.create_task(client._watchdog())
        try:
            await client.request(hello_message(token), timeout=10)
        except AuthError as exc:
            client.proto.close()
            raise hello_refused(exc) from None
        return client

    # --- messages ----------------------------------------------------------------------------------
    def _on_message(self, msg: P.ToClient) -> None:
        self.last_heard = _monotonic()
        if isinstance(msg, (P.Outputs, P.GenItems)):
            handler = self._calls.get(msg.call or "")
            if handler is not None:
                # A map's chunk rows (`P.CallChunkOutput`) come after its single rows, in one list.
                handler(msg.t, msg.items + msg.chunks if isinstance(msg, P.Outputs) and msg.chunks else msg.items)
        elif isinstance(msg, P.Result):
            fut = self._pending.pop(msg.id, None)
            if fut is not None and not fut.done():
                if msg.ok:
                    fut.set_result(msg.v)
                else:
                    fut.set_exception(error_from_code(msg.code or P.errors.INTERNAL, msg.msg or ""))
        elif isinstance(msg, P.Log):
            if self.log_handler is not None:
                self.log_handler(P.as_dict(msg))  # handlers read a log line as a map
        elif isinstance(msg, (P.SandboxOut, P.SandboxExit)):  # a sandbox exec's output (watched by its exec id)
            handler = self._calls.get(msg.exec)
            if handler is not None:
                handler(msg.t, [msg])
        elif isinstance(msg, P.Ping):
            self.proto.send(_PONG)

    # --- liveness -----------------------------------------------------------------------------------
    async def _watchdog(self) -> None:
        """While something waits on the control plane, make sure it still answers: after a quiet
        HEARTBEAT_SECONDS send a PING (a busy connection needs none), say so on stderr once it has been
        silent for SILENCE_WARN_SECONDS (a SIGSTOPped or wedged control plane), and, when
        HOMEPORT_CONTROL_PLANE_TIMEOUT is set, give up after that many seconds with ConnectionError.
        Without it the client keeps waiting (the control plane may be resumed)."""
        watch = SilenceWatch(self.address)
        last = _monotonic()
        while not self.closed:
            await asyncio.sleep(P.HEARTBEAT_SECONDS / 2)
            now = _monotonic()
            if not (self._pending or self._calls) or now - last > 2 * P.HEARTBEAT_SECONDS:
                # idle: nothing to wait for, silence is normal; or this process did not run (stopped,
                # suspended) and the control plane's answers are still unread
                self.last_heard = max(self.last_heard, now - P.HEARTBEAT_SECONDS)
                last = now
                continue
            last = now
            try:
                ping = watch.check(_monotonic() - self.last_heard)
            except ConnectionError as err:  # silent past HOMEPORT_CONTROL_PLANE_TIMEOUT
                self.proto.close()
                self._fail_all(err)
                return
            if ping:
                self.proto.send(_PING)

    def _on_close(self) -> None:
        self._fail_all(connection_lost())

    def _fail_all(self, err: Exception) -> None:
        self.closed = True
        if self._failed:
            return
        self._failed = True
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(err)
        self._pending.clear()
        for handler in list(self._calls.values()):
            handler("closed", [])

    async def request(self, msg: P.Request | P.SandboxRequest | dict[str, Any], timeout: float | None = 60) -> Any:
        """Send a request and wait for its RESULT's value. (A plain map is accepted too: tests send
        malformed ones.)"""
        if self.closed:
            raise connection_lost()
        rid = next(self._ids)
        if type(msg) is dict:
            msg["id"] = rid
        else:
            msg.id = rid  # type: ignore[union-attr]
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        self.proto.send(msg)
        try:
            return await asyncio.wait_for(fut, timeout) if timeout else await fut
        finally:
            self._pending.pop(rid, None)

    def send(self, msg: P.Message | P.SandboxRequest | dict[str, Any]) -> None:
        if self.closed:
            raise connection_lost()
        self.proto.send(msg)

    def watch_call(self, call_id: str, handler: OutputHandler) -> None:
        self._calls[call_id] = handler

    def unwatch_call(self, call_id: str) -> None:
        self._calls.pop(call_id, None)


async def get_client() -> Client:
    return await Client.get()


_shown_stderr: collections.deque[str] = collections.deque(maxlen=4000)  # container stderr lines printed here


def was_shown(text: str) -> bool:
    """Whether every line of `text` (a remote traceback, say) was printed here as container stderr."""
    shown = set(_shown_stderr)
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    return bool(lines) and all(line in shown for line in lines[1:])  # the first: the note's own title


def default_log_printer(msg: dict[str, Any]) -> None:
    stream = sys.stderr if msg.get("fd") == 2 else sys.stdout
    prefix = f"[{msg['fn']} {msg['cid'][-8:]}] " if msg.get("cid") else f"[{msg['fn']}] "
    text = msg["data"]
    if msg.get("fd") == 2:
        _shown_stderr.append(text.rstrip())
    line = prefix + text if text.endswith("\n") else prefix + text + "\n"
    write_log = getattr(stream, "write_log", None)  # `homeport run`'s guard: between the program's own lines
    if write_log is not None:
        write_log(line)
    else:
        stream.write(line)
        stream.flush()


def ensure_bridge() -> None:
    bridge_loop()
