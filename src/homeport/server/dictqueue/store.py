"""`DictQueueStore`: the Dicts and Queues of a control plane, over one database connection, and `handle`,
which answers a connection's DICT and QUEUE messages with it."""

from __future__ import annotations

import builtins  # `list` is a method name of the store class below
import time
from collections.abc import Callable
from typing import Any

from ..._protocol import dictqueue as D
from ...exception import InvalidError
from .dicts import DictEntries
from .limits import KINDS, check_partition
from .objects import Objects
from .queues import QueueItems

_SWEEP_EVERY = 60.0


class DictQueueStore:
    def __init__(self, db: Any, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self.clock = clock
        self.objects = Objects(db, clock)
        self.dicts = DictEntries(db, clock)
        self.queues = QueueItems(db, clock, lambda oid: self.by_id("queue", oid))
        self._last_sweep = 0.0
        # Ephemeral objects of a previous control plane belonged to clients that are gone.
        for oid in self.objects.ephemeral():
            self._delete(oid)
        self.sweep()

    # --- objects -----------------------------------------------------------------------------------
    def lookup(self, kind: str, name: Any, create_if_missing: bool = False) -> dict[str, Any]:
        return self.objects.lookup(kind, name, create_if_missing)

    def create(self, kind: str, name: Any, allow_existing: bool = False) -> dict[str, Any]:
        return self.objects.create(kind, name, allow_existing)

    def create_ephemeral(self, kind: str, owner: object) -> dict[str, Any]:
        return self.objects.create_ephemeral(kind, owner)

    def by_id(self, kind: str, oid: Any) -> dict[str, Any]:
        return self.objects.by_id(kind, oid)

    def list(self, kind: str) -> list[dict[str, Any]]:
        return self.objects.list(kind)

    def delete(self, kind: str, oid: str, owner: object | None = None) -> None:
        self.by_id(kind, oid)
        self._delete(oid)
        if owner is not None:
            self.objects.disown(owner, oid)

    def _delete(self, oid: str) -> None:
        self.dicts.drop(oid)
        self.queues.drop(oid)
        self.objects.remove(oid)

    def owner_closed(self, owner: object) -> None:
        """The connection that created ephemeral objects closed: they go with it."""
        for oid in self.objects.owner_closed(owner):
            self._delete(oid)

    def sweep(self) -> None:
        """Forget expired dict entries and queue partitions."""
        now = self.clock()
        self._last_sweep = now
        self.dicts.sweep(now)
        self.queues.sweep(now)

    def _maybe_sweep(self) -> None:
        if self.clock() - self._last_sweep >= _SWEEP_EVERY:
            self.sweep()

    # --- contents ----------------------------------------------------------------------------------
    def dict_op(self, op: D.Operation) -> Any:
        oid = self.by_id("dict", getattr(op, "oid", None))["object_id"]
        self._maybe_sweep()
        return self.dicts.op(oid, op)

    async def queue_op(self, op: D.Operation, connection_open: Callable[[], bool]) -> Any:
        if not isinstance(op, D._QueueOperation):
            raise InvalidError(f"unknown Queue operation {D.name_of(op)!r}")
        oid = self.by_id("queue", op.oid)["object_id"]
        self._maybe_sweep()
        return await self.queues.op(op, oid, check_partition(op.partition), connection_open)

    def queue_put(self, oid: str, part: bytes, values: builtins.list[bytes], ttl: float) -> None:
        self.queues.put(oid, part, values, ttl)

    def queue_take(self, oid: str, part: bytes, n: int) -> builtins.list[bytes]:
        return [r[1] for r in self.queues.take_rows(oid, part, n)]

    def queue_len(self, oid: str, part: bytes, total: bool) -> int:
        return self.queues.len(oid, part, total)

    def queue_clear(self, oid: str, part: bytes, everything: bool) -> None:
        self.queues.clear(oid, part, everything)

    def queue_after(self, oid: str, part: bytes, after: int) -> builtins.list[builtins.list[Any]]:
        return self.queues.after(oid, part, after)

    # --- messages ----------------------------------------------------------------------------------
    def object_op(self, kind: str, op: D.Operation, owner: object) -> Any:
        """Operations on the objects themselves (not their contents)."""
        if isinstance(op, D.Lookup):
            return self.lookup(kind, op.name, op.create_if_missing)
        if isinstance(op, D.Create):
            return self.create(kind, op.name, op.allow_existing)
        if isinstance(op, D.Ephemeral):
            return self.create_ephemeral(kind, owner)
        if isinstance(op, D.ById):
            return self.by_id(kind, op.oid)
        if isinstance(op, D.ListObjects):
            return self.list(kind)
        if isinstance(op, D.Delete):
            return self.delete(kind, op.oid, owner)
        if isinstance(op, D.Release):  # the end of an ephemeral object's `with` block: only its creator's
            if self.objects.owns(owner, op.oid):
                self.delete(kind, op.oid, owner)
            return None
        raise InvalidError(f"unknown {KINDS[kind][0]} operation {D.name_of(op)!r}")


async def handle(store: DictQueueStore | None, peer: Any, kind: str, op: D.Operation) -> Any:
    """One DICT or QUEUE operation (checked as its type: `homeport._protocol.dictqueue`) of a connection
    (`peer.proto`); `kind` is the message's tag, "dict" or "queue"."""
    if store is None:
        raise LookupError("Dicts and Queues are not available on this control plane")
    if isinstance(op, D.OBJECT_OPERATIONS):
        return store.object_op(kind, op, peer)
    if kind == "dict":
        return store.dict_op(op)
    return await store.queue_op(op, lambda: not peer.proto.is_closing)
