"""Containers' log lines: kept in the log store (what `app logs` reads) and sent to the live readers of
their app; and the queries and subscriptions of those readers.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .. import _protocol as P
from .executor import Executor
from .logs import FLUSH_SECONDS as FLUSH_LOGS_SECONDS
from .logs import LogQuery, LogStore
from .observe import Observer
from .records import ContainerRecord, Peer, Registry


class LogFeed:
    def __init__(self, registry: Registry, executor: Executor, logs: LogStore, observer: Observer) -> None:
        self.apps = registry.apps
        self.inputs = registry.inputs
        self.containers = registry.containers
        self.stopping_apps = registry.stopping_apps
        self.log_subscribers = registry.log_subscribers
        self.executor = executor
        self.logs = logs
        self.observer = observer
        self._logs_flush: asyncio.TimerHandle | None = None

    def record_log(self, rec: ContainerRecord, stream: str, data: str) -> None:
        """A line of a container's (`stream`: stdout, stderr, or system: the platform's about it): kept in
        the log store, and sent to the app's live log readers."""
        running = self.executor.container(rec.container_id)
        call_id = None
        if running is not None and len(running.running) == 1:
            inp = self.inputs.get(next(iter(running.running)))
            call_id = inp.call.call_id if inp is not None else None
        elif running is None or not running.running:
            call_id = rec.last_call_id
        self.logs.add(rec.fn.app_id, stream, data, function_id=rec.fn.function_id, function=rec.fn.tag,
                      container_id=rec.container_id, call_id=call_id)
        self.observer.log_line(rec.fn.app_id, rec.fn.tag, rec.container_id, stream, data, call_id)
        if self._logs_flush is None:
            self._logs_flush = asyncio.get_running_loop().call_later(FLUSH_LOGS_SECONDS, self._flush_logs)
        subs = self.log_subscribers.get(rec.fn.app_id)
        if subs:
            msg = P.Log(app=rec.fn.app_id, fn=rec.fn.tag, cid=rec.container_id, fd=1 if stream == "stdout" else 2,
                        data=data)
            for peer in subs:
                peer.proto.send(msg)

    def _flush_logs(self) -> None:
        self._logs_flush = None
        self.logs.flush()

    def query_logs(self, msg: P.LogQuery) -> dict[str, Any]:
        """Log entries (see `logs.LogQuery`), and whether the app (if one was named) still runs: a
        follower stops once it does not and nothing more is left to read."""
        try:
            q = LogQuery.from_message(P.as_dict(msg))
        except (TypeError, ValueError) as exc:
            from ..exception import InvalidError

            raise InvalidError(str(exc)) from None
        running = None
        if q.app_id is not None:
            running = q.app_id in self.apps or q.app_id in self.stopping_apps
        elif q.container_id is not None:
            running = q.container_id in self.containers
        return {"entries": self.logs.query(q), "running": running}

    def subscribe_logs(self, peer: Peer, app_id: str) -> None:
        self.log_subscribers.setdefault(app_id, set()).add(peer)
