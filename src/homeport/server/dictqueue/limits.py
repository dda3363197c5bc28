"""Modal's limits on Dicts and Queues, and the checks of what a client sends (pure: unit tested)."""

from __future__ import annotations

from typing import Any

from ..._names import object_name_problem
from ..._protocol import dictqueue as D
from ...exception import InvalidError, RequestSizeError, ResourceExhaustedError

DICT_ENTRY_TTL = 7 * 24 * 3600.0
DEFAULT_PARTITION_TTL = D.DEFAULT_PARTITION_TTL
_ANSWERED_GET_SECONDS = 30.0  # how long a blocking get's answer can still be taken back by its cancellation
_ANSWERED_GETS_BYTES = 64 << 20  # and how much of what they took is kept for that, at most
MAX_PARTITIONS = 100_000
PARTITION_MAX_ITEMS = 5_000
PARTITION_MAX_BYTES = 64 << 20
ITEM_MAX_BYTES = 1 << 20
PARTITION_KEY_MAX_BYTES = 64
MAX_WAIT_SECONDS = 60.0  # one request waits at most this long; the SDK asks again (as Modal's does)
PAGE = 1000  # entries of a Dict page, items of a Queue iteration, per request

KINDS = {"dict": ("Dict", "di-"), "queue": ("Queue", "qu-")}


def check_name(name: Any, kind: str) -> str:
    """Modal's object-name rule, checked where every Dict and Queue name arrives."""
    problem = object_name_problem(name, KINDS[kind][0])
    if problem is not None:
        raise InvalidError(problem)
    return name


def check_partition(partition: Any) -> bytes:
    """The stored key of a partition: b"" for the default one, else 1 to 64 bytes."""
    if partition is None or partition == b"":
        return b""
    if isinstance(partition, str):
        partition = partition.encode("utf-8")
    if not isinstance(partition, bytes) or len(partition) > PARTITION_KEY_MAX_BYTES:
        raise InvalidError("Queue partition key must be between 1 and 64 characters.")
    return partition


def check_ttl(ttl: Any) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
        raise InvalidError(f"`partition_ttl` must be a positive number of seconds, not {ttl!r}")
    return float(ttl)


def check_put(current_items: int, current_bytes: int, sizes: list[int], new_partition: bool, partitions: int) -> None:
    """Raise what Modal raises when `sizes` more items do not fit the partition."""
    for n in sizes:
        if n > ITEM_MAX_BYTES:
            raise RequestSizeError(f"Queue item of {n} bytes is larger than the limit of {ITEM_MAX_BYTES} bytes (1 MiB)")
    if new_partition and partitions >= MAX_PARTITIONS:
        raise ResourceExhaustedError(f"Queue has reached its limit of {MAX_PARTITIONS} partitions")
    if current_items + len(sizes) > PARTITION_MAX_ITEMS:
        raise ResourceExhaustedError(f"Queue partition is full: it holds at most {PARTITION_MAX_ITEMS} items")
    if current_bytes + sum(sizes) > PARTITION_MAX_BYTES:
        raise ResourceExhaustedError("Queue partition is full: it holds at most 64 MiB")


def _wait_seconds(timeout: Any) -> float:
    """How long one request waits: its `wait`, at most `MAX_WAIT_SECONDS`."""
    if timeout is None:
        return 0.0
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout != timeout:
        raise InvalidError(f"timeout must be a number of seconds, not {timeout!r}")
    return max(0.0, min(float(timeout), MAX_WAIT_SECONDS))
