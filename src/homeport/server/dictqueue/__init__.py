"""Dicts and Queues: Modal's distributed key-value store and FIFO queues, kept in the state database.

Both are rows in SQLite (tables in the modules below, in the control plane's `state.db`); a name is only ever a
column value, never a path. Keys and values arrive already pickled by the SDK and are stored and
compared as bytes: the control plane never unpickles what a client or a container sent.

Semantics (Modal's, `modal/dict.py` and `modal/queue.py`):

- a Dict entry expires `DICT_ENTRY_TTL` (7 days) after its last read or write;
- a Queue has partitions (the default one has the empty key); each is a FIFO of at most
  `PARTITION_MAX_ITEMS` items and `PARTITION_MAX_BYTES` bytes, an item is at most `ITEM_MAX_BYTES`,
  a queue has at most `MAX_PARTITIONS` partitions, and a partition is cleared `partition_ttl` seconds
  (24 h by default) after its last put;
- a blocking get (or a blocking put on a full partition) waits here, on the control plane, for a
  put (or a get) to wake it, up to its timeout: clients never poll.

Ephemeral objects belong to the connection that created them and are deleted when it closes (and
at start-up: the clients of a previous control plane are gone). The clock is injectable for tests.

The modules: `limits` (Modal's limits and the checks of what clients send, pure), `objects` (the objects,
their names and owners), `dicts` (Dict entries), `queues` (Queue items, blocking gets and puts), `store`
(`DictQueueStore`, which puts them together, and `handle`, which answers DICT and QUEUE messages).
"""

from __future__ import annotations

from .limits import (
    DEFAULT_PARTITION_TTL,
    DICT_ENTRY_TTL,
    ITEM_MAX_BYTES,
    MAX_PARTITIONS,
    MAX_WAIT_SECONDS,
    PARTITION_MAX_BYTES,
    PARTITION_MAX_ITEMS,
    check_name,
    check_partition,
    check_put,
    check_ttl,
)
from .store import DictQueueStore, handle

__all__ = [
    "DEFAULT_PARTITION_TTL",
    "DICT_ENTRY_TTL",
    "ITEM_MAX_BYTES",
    "MAX_PARTITIONS",
    "MAX_WAIT_SECONDS",
    "PARTITION_MAX_BYTES",
    "PARTITION_MAX_ITEMS",
    "DictQueueStore",
    "check_name",
    "check_partition",
    "check_put",
    "check_ttl",
    "handle",
]
