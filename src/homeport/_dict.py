"""`Dict`: a distributed key-value store kept by the control plane (`homeport.server.dictqueue`).

```python
d = modal.Dict.from_name("results", create_if_missing=True)
d["job-1"] = {"ok": True}
d.put("job-2", 2, skip_if_exists=True)
for key, value in d.items():
    ...
```

Keys and values are pickled; a key is found again when it pickles to the same bytes (as in Modal).
Entries expire after 7 days without a read or write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from . import _pickle
from ._protocol import dictqueue as D
from ._stored_object import KIND_DICT, StoredObject, aio_generator, blocking_method, register
from .exception import DeserializationError, SerializationError

__all__ = ["Dict"]

_MISSING: Any = object()


def _dumps(value: Any, what: str) -> bytes:
    try:
        return _pickle.dumps(value)
    except Exception as exc:
        raise SerializationError(f"Cannot pickle the Dict {what} {value!r}: {exc}") from exc


def _loads(blob: bytes) -> Any:
    try:
        return _pickle.loads(blob)
    except Exception as exc:
        raise DeserializationError(
            f"Cannot unpickle a value of this Dict ({type(exc).__name__}: {exc}); is the library that defines "
            "its type installed here?"
        ) from exc


@register
class Dict(StoredObject):
    """A distributed dictionary, shared by the client and every container that uses it."""

    _kind = KIND_DICT
    _label = "Dict"
    __slots__ = ()

    @blocking_method
    async def get(self, key: Any, default: Any = None) -> Any:
        """The value for `key`, or `default` when there is none."""
        found, value = await self._op(D.DictGet, key=_dumps(key, "key"))
        return _loads(value) if found else default

    @blocking_method
    async def contains(self, key: Any) -> bool:
        return bool(await self._op(D.DictContains, key=_dumps(key, "key")))

    @blocking_method
    async def len(self) -> int:
        """The number of entries (it counts the whole Dict: use it sparingly on big ones)."""
        return int(await self._op(D.DictLen))

    @blocking_method
    async def put(self, key: Any, value: Any, *, skip_if_exists: bool = False) -> bool:
        """Set `key` to `value`; with `skip_if_exists=True` only when `key` has no value. Whether it was set."""
        return bool(await self._op(D.DictPut, key=_dumps(key, "key"), value=_dumps(value, "value"),
                                   skip_if_exists=bool(skip_if_exists)))

    @blocking_method
    async def update(self, other: Mapping[Any, Any] | None = None, /, **kwargs: Any) -> None:
        """Like `dict.update`."""
        items = dict(other or {})
        items.update(kwargs)
        if items:
            await self._op(D.DictUpdate, items=[(_dumps(k, "key"), _dumps(v, "value")) for k, v in items.items()])

    @blocking_method
    async def pop(self, key: Any, default: Any = _MISSING) -> Any:
        """Remove `key` and return its value; `KeyError` when it has none and no `default` is given."""
        found, value = await self._op(D.DictPop, key=_dumps(key, "key"))
        if found:
            return _loads(value)
        if default is _MISSING:
            raise KeyError(f"{key} not in dict {self._object_id}")
        return default

    @blocking_method
    async def clear(self) -> None:
        """Remove every entry."""
        await self._op(D.DictClear)

    async def _entries(self) -> AsyncIterator[tuple[bytes, bytes]]:
        after = 0
        while True:
            page = await self._op(D.DictPage, after=after)
            for seq, key, value in page:
                after = seq
                yield key, value
            if not page:
                return

    @aio_generator
    async def keys(self) -> AsyncIterator[Any]:
        """The keys, in no particular order."""
        async for key, _value in self._entries():
            yield _loads(key)

    @aio_generator
    async def values(self) -> AsyncIterator[Any]:
        """The values, in no particular order."""
        async for _key, value in self._entries():
            yield _loads(value)

    @aio_generator
    async def items(self) -> AsyncIterator[tuple[Any, Any]]:
        """(key, value) pairs, in no particular order."""
        async for key, value in self._entries():
            yield _loads(key), _loads(value)

    # Blocking only, as in Modal.
    def __getitem__(self, key: Any) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(f"{key} not in dict {self._object_id}")
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        self.put(key, value)

    def __delitem__(self, key: Any) -> None:
        self.pop(key)

    def __contains__(self, key: Any) -> bool:
        return self.contains(key)
