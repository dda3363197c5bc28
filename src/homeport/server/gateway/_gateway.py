"""`Gateway`: the listening ports, what each routes to, the upstream pool and the sweeper."""

from __future__ import annotations

import asyncio
import contextlib

from ._client import _Client, _Listener
from ._http import (
    CLIENT_IDLE_SECONDS,
    HEAD_SECONDS,
    POOL_MAX_IDLE,
    Endpoint,
    _Route,
)
from ._upstream import _Upstream


class Gateway:
    """Listens on one TCP port per web endpoint and proxies each request to a container's Unix socket."""

    idle_timeout = CLIENT_IDLE_SECONDS
    head_timeout = HEAD_SECONDS

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._listeners: dict[int, _Listener] = {}
        self._routes: dict[int, _Route] = {}
        self._pool: dict[str, list[_Upstream]] = {}
        self._live: set[asyncio.Protocol] = set()  # every connection whose transport is not yet closed
        self._lock = asyncio.Lock()
        self._sweeper: asyncio.Task | None = None
        self._shortest_timeout = float("inf")

    async def open(self, port: int = 0) -> int:
        """Start listening on host:port (0: the OS picks); returns the port. An open port is kept."""
        async with self._lock:
            if port and port in self._listeners:
                return port
            self._loop = asyncio.get_running_loop()
            listener = _Listener()
            server = await self._loop.create_server(
                lambda: _Client(self, listener), self.host, port, backlog=1024
            )
            listener.server = server
            listener.port = server.sockets[0].getsockname()[1]
            self._listeners[listener.port] = listener
            if self._sweeper is None:
                self._sweeper = self._loop.create_task(self._sweep())
            return listener.port

    def route(self, port: int, endpoint: Endpoint | None, gone: str = "") -> None:
        """What `port` serves from now on (None: 404 with `gone`); exchanges in flight keep theirs."""
        self._routes[port] = _Route(endpoint, gone)
        self._retime()

    def _retime(self) -> None:
        self._shortest_timeout = min(
            (r.endpoint.timeout for r in self._routes.values() if r.endpoint and r.endpoint.timeout > 0),
            default=float("inf"),
        )

    async def close_port(self, port: int) -> None:
        """Stop listening on `port`, cut its connections and wait for its exchanges to end."""
        if self._routes.pop(port, None) is not None:
            self._retime()
        listener = self._listeners.pop(port, None)
        if listener is None:
            return
        assert listener.server is not None
        listener.closed = True
        listener.server.close()
        for client in list(listener.clients):
            client.shutdown()
        if listener.tasks:
            await asyncio.gather(*listener.tasks, return_exceptions=True)
        await listener.server.wait_closed()

    async def close(self) -> None:
        """Stop listening, abort every connection, and wait until no task or socket is left."""
        for port in list(self._listeners):
            await self.close_port(port)
        for idle in self._pool.values():
            for conn in idle:
                conn.transport.abort()
        self._pool.clear()
        for live in list(self._live):
            if live.transport is not None:  # type: ignore[attr-defined]
                live.transport.abort()  # type: ignore[attr-defined]
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        # Aborted transports report connection_lost from the loop; let them, so that no socket is left.
        for _ in range(100):
            if not self._live:
                break
            await asyncio.sleep(0)

    # --- the upstream pool -----------------------------------------------------------------------
    def _pool_take(self, path: str) -> _Upstream | None:
        idle = self._pool.get(path)
        while idle:
            conn = idle.pop()
            if not idle:
                del self._pool[path]  # socket paths come and go with containers: keep no empty lists
            if not conn.lost:
                return conn
        return None

    def _pool_put(self, conn: _Upstream) -> None:
        idle = self._pool.get(conn.path)
        if idle is None:
            idle = self._pool[conn.path] = []
        if len(idle) >= POOL_MAX_IDLE:
            conn.transport.close()
            return
        conn.resume_reading()  # an idle connection is read, to notice when the container closes it
        idle.append(conn)

    def _pool_discard(self, conn: _Upstream) -> None:
        idle = self._pool.get(conn.path)
        if idle is not None and conn in idle:
            idle.remove(conn)
            if not idle:
                del self._pool[conn.path]

    async def _sweep(self) -> None:
        """End exchanges past their deadline, close client connections idle past `idle_timeout`.

        One sweep for all rather than a timer per request: on uvloop, call_later plus cancel costs about
        2 µs, a noticeable share of what the gateway itself spends on a request. Deadlines are met to
        within a tick, a tenth of the shortest timeout served (at most a second)."""
        while True:
            await asyncio.sleep(max(0.01, min(1.0, self.idle_timeout / 4, self.head_timeout / 4,
                                              self._shortest_timeout / 10)))
            now = self._loop.time()
            idle_since = now - self.idle_timeout
            head_since = now - self.head_timeout
            for listener in list(self._listeners.values()):
                for client in list(listener.clients):
                    if client.head_since and client.head_since < head_since and client.active is None \
                            and not client.closed:
                        client.head_timed_out()
                        continue
                    ex = client.active
                    if ex is not None:
                        if ex.deadline and now >= ex.deadline:
                            ex.timed_out()
                    elif client.lingering:
                        if now >= client.lingering:
                            client.lingering = 0.0
                            client.transport.close()
                    elif client.closed:
                        continue  # closing already
                    elif not client.queue and client.seen < idle_since:
                        client._close(drain=False)
