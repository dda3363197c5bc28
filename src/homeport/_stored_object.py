"""What `Dict` and `Queue` share: names, ids, lazy hydration, ephemeral objects, `objects`, pickling.

An object is a handle: `from_name` and `from_id` only remember what to look up, and the first
operation asks the control plane for the object's id (creating it with `create_if_missing=True`).
Pickled (as a function argument, or a value in another Dict or Queue) a handle travels by reference:
its id, or its name while it is not hydrated, and it is hydrated where it is used.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, ClassVar

from . import _protocol as P
from ._bridge import GeneratorWithAio, MethodWithAio, in_bridge_thread, run_async, run_sync
from ._protocol import dictqueue as D
from ._secret import check_object_name
from ._session import connection_lost
from .exception import ConnectionError, InvalidError, UnimplementedError, error_from_code


@dataclass(frozen=True)
class ObjectInfo:
    """What `info()` returns (Modal's `DictInfo` / `QueueInfo`)."""

    name: str | None
    created_at: datetime
    created_by: str | None = None


def _no_client(client: Any) -> None:
    if client is not None:
        raise UnimplementedError("Passing `client=` is not supported by Homeport: objects use the process's connection.")


# Ephemeral objects belong to the connection that made them: the process's long-lived client's.
_OWNED_OPS = (D.Ephemeral, D.Release)
_blocking = threading.local()  # `on`: this thread runs a blocking method (see `blocking_method`)
_sync_ids = itertools.count(1)


_OPS: dict[str, type[P.DictOp] | type[P.QueueOp]] = {P.DICT: P.DictOp, P.QUEUE: P.QueueOp}


async def _request(kind: str, operation: D.Operation, timeout: float | None = 60) -> Any:
    msg = _OPS[kind](**D.fields_of(operation))
    if getattr(_blocking, "on", False) and not isinstance(operation, _OWNED_OPS):
        return _sync_request(msg)
    from ._client import get_client

    client = await get_client()
    return await client.request(msg, timeout=timeout)


def _sync_request(msg: P.DictOp | P.QueueOp) -> Any:
    """One request over the calling thread's own blocking connection (`_syncchan`): no thread hop."""
    from . import _launcher
    from ._syncchan import SyncChannel

    try:
        ch = SyncChannel.get()
    except ConnectionError:  # the first call of this process may start the control plane, as the client does
        _launcher.ensure_server()
        ch = SyncChannel.get()
    msg.id = next(_sync_ids)
    try:
        reply = ch._request(msg)
    except KeyboardInterrupt:
        # Interrupted while the control plane may still be waiting (a blocking get): say so, and drop
        # the connection (a control plane takes no item for a connection that is gone).
        if msg.wait_id is not None:
            with contextlib.suppress(OSError):
                cancel = D.QueueCancelWait(oid=msg.oid or "", partition=msg.partition, wait_id=msg.wait_id)
                ch.sock.sendall(P.encode(P.QueueOp(id=0, **D.fields_of(cancel))))
        ch.close()
        raise
    except (OSError, EOFError):
        ch.close()
        raise connection_lost() from None
    if not reply.ok:
        raise error_from_code(reply.code or P.errors.INTERNAL, reply.msg or "")
    return reply.v


class _BlockingFirst(MethodWithAio):
    """`obj.m(...)` runs the method's coroutine on the calling thread, its requests over the thread's
    blocking connection (about 3x faster than a hop to the bridge loop); `.aio` is unchanged."""

    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if getattr(_blocking, "on", False) or in_bridge_thread():
            return super().__call__(*args, **kwargs)
        coro = self._impl(*args, **kwargs)
        _blocking.on = True
        try:
            coro.send(None)
        except StopIteration as stop:
            return stop.value
        finally:
            _blocking.on = False
        coro.close()
        raise RuntimeError(f"{self.__name__}() waited on an event loop in blocking mode")  # a bug of ours


def blocking_method(impl: Callable[..., Any]) -> Any:
    """Like `_bridge.aio_method`, with the blocking form on the calling thread (see `_BlockingFirst`).
    The coroutine must await nothing but `_request` (which then does not suspend)."""

    class _Descriptor:
        def __get__(self, obj: Any, objtype: Any = None) -> Any:
            if obj is None:
                return self
            return _BlockingFirst(functools.partial(impl, obj), impl.__name__)

    return _Descriptor()


class _Manager:
    """`modal.Dict.objects` / `modal.Queue.objects`: create, list and delete named objects."""

    def __init__(self, cls: type[StoredObject]) -> None:
        self._cls = cls
        self.create = MethodWithAio(self._create, "create")
        self.list = MethodWithAio(self._list, "list")
        self.delete = MethodWithAio(self._delete, "delete")

    async def _create(
        self, name: str, *, allow_existing: bool = False, environment_name: str | None = None, client: Any = None
    ) -> None:
        _no_client(client)
        check_object_name(name, self._cls._label)
        await _request(self._cls._kind, D.Create(name=name, allow_existing=bool(allow_existing)))

    async def _list(
        self,
        *,
        max_objects: int | None = None,
        created_before: datetime | str | None = None,
        environment_name: str = "",
        client: Any = None,
    ) -> list[Any]:
        _no_client(client)
        if max_objects is not None and max_objects < 0:
            raise InvalidError("max_objects cannot be negative")
        rows = await _request(self._cls._kind, D.ListObjects())
        if created_before is not None:
            if isinstance(created_before, str):
                created_before = datetime.fromisoformat(created_before)
            if created_before.tzinfo is None:
                created_before = created_before.replace(tzinfo=timezone.utc)
            rows = [r for r in rows if r["created_at"] < created_before.timestamp()]
        objs = [self._cls._hydrated(r) for r in rows]
        return objs[:max_objects] if max_objects is not None else objs

    async def _delete(
        self, name: str, *, allow_missing: bool = False, environment_name: str | None = None, client: Any = None
    ) -> None:
        from .exception import NotFoundError

        _no_client(client)
        check_object_name(name, self._cls._label)
        try:
            meta = await _request(self._cls._kind, D.Lookup(name=name))
            await _request(self._cls._kind, D.Delete(oid=meta["object_id"]))
        except NotFoundError:
            if not allow_missing:
                raise


class _ObjectsProperty:
    def __get__(self, obj: Any, cls: type[StoredObject]) -> _Manager:
        return _Manager(cls)


class _Ephemeral:
    """`with modal.Queue.ephemeral() as q:` or `async with ...`: an object that lives as long as the block."""

    def __init__(self, cls: type[StoredObject]) -> None:
        self._cls = cls
        self._obj: StoredObject | None = None

    async def _enter(self) -> StoredObject:
        meta = await _request(self._cls._kind, D.Ephemeral())
        self._obj = self._cls._hydrated(meta, ephemeral=True)
        return self._obj

    async def _exit(self) -> None:
        obj, self._obj = self._obj, None
        if obj is not None and obj._object_id is not None:
            await _request(self._cls._kind, D.Release(oid=obj._object_id))

    def __enter__(self) -> Any:
        return run_sync(self._enter())

    def __exit__(self, *exc: Any) -> None:
        run_sync(self._exit())

    async def __aenter__(self) -> Any:
        return await run_async(self._enter())

    async def __aexit__(self, *exc: Any) -> None:
        await run_async(self._exit())


def _rebuild(kind: str, object_id: str | None, name: str | None, create_if_missing: bool) -> StoredObject:
    cls = _KINDS[kind]
    obj = cls._new(name=name, object_id=object_id, create_if_missing=create_if_missing)
    return obj


class StoredObject:
    _kind: ClassVar[str]
    _label: ClassVar[str]

    __slots__ = ("_create_if_missing", "_created_at", "_environment_name", "_is_ephemeral", "_name", "_object_id")
    _name: str | None
    _object_id: str | None
    _create_if_missing: bool
    _environment_name: str | None
    _is_ephemeral: bool
    _created_at: float | None

    objects = _ObjectsProperty()

    def __init__(self) -> None:
        raise RuntimeError(
            f"{self._label}() is not allowed. Please use `{self._label}.from_name(...)` or "
            f"`{self._label}.ephemeral()` instead."
        )

    @classmethod
    def _new(
        cls,
        *,
        name: str | None = None,
        object_id: str | None = None,
        create_if_missing: bool = False,
        environment_name: str | None = None,
        ephemeral: bool = False,
    ) -> Any:
        obj = object.__new__(cls)
        obj._name = name
        obj._object_id = object_id
        obj._create_if_missing = create_if_missing
        obj._environment_name = environment_name
        obj._is_ephemeral = ephemeral
        obj._created_at = None
        return obj

    @classmethod
    def _hydrated(cls, meta: dict[str, Any], ephemeral: bool = False) -> Any:
        obj = cls._new(name=meta.get("name"), object_id=meta["object_id"], ephemeral=ephemeral)
        obj._created_at = meta.get("created_at")
        return obj

    @classmethod
    def from_name(
        cls, name: str, *, environment_name: str | None = None, create_if_missing: bool = False, client: Any = None
    ) -> Any:
        """A reference to the named object, looked up (or created) when it is first used."""
        _no_client(client)
        check_object_name(name, cls._label)
        if not isinstance(create_if_missing, bool):
            raise InvalidError(f"`create_if_missing` must be a bool, not {type(create_if_missing).__name__}")
        return cls._new(name=name, create_if_missing=create_if_missing, environment_name=environment_name)

    @classmethod
    def from_id(cls, object_id: str, client: Any = None) -> Any:
        """A reference to the object with this id (`obj.object_id`), named or ephemeral."""
        _no_client(client)
        if not isinstance(object_id, str):
            raise InvalidError(f"{cls._label} ids are strings, not {type(object_id).__name__}")
        return cls._new(object_id=object_id)

    @classmethod
    def ephemeral(cls, client: Any = None, environment_name: str | None = None) -> Any:
        """A nameless object that exists for the duration of the `with` (or `async with`) block."""
        _no_client(client)
        return _Ephemeral(cls)

    @classmethod
    def delete(cls, name: str, *, environment_name: str | None = None, client: Any = None) -> None:
        """Deprecated in Modal 1.1: `objects.delete(name)`."""
        import warnings

        from .exception import DeprecationError

        warnings.warn(
            f"{cls._label}.delete is deprecated; use {cls._label}.objects.delete instead.", DeprecationError, stacklevel=2
        )
        cls.objects.delete(name, environment_name=environment_name, client=client)

    # --- identity ----------------------------------------------------------------------------------
    @property
    def name(self) -> str | None:
        return self._name

    @property
    def object_id(self) -> str:
        if self._object_id is None:
            if in_bridge_thread():
                raise InvalidError(f"{self!r} is not hydrated yet; call `await obj.hydrate.aio()` first")
            run_sync(self._oid())
        return self._object_id  # type: ignore[return-value]

    @property
    def is_hydrated(self) -> bool:
        return self._object_id is not None

    def __repr__(self) -> str:
        if self._name is not None:
            return f"{self._label}.from_name({self._name!r})"
        if self._object_id is not None:
            return f"{self._label}.from_id({self._object_id!r})"
        return f"{self._label}()"

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (_rebuild, (self._kind, self._object_id, self._name, self._create_if_missing))

    async def _oid(self) -> str:
        if self._object_id is None:
            if self._name is None:
                raise InvalidError(f"{self._label} has neither a name nor an id")
            meta = await _request(self._kind, D.Lookup(name=self._name, create_if_missing=self._create_if_missing))
        elif self._created_at is None:
            meta = await _request(self._kind, D.ById(oid=self._object_id))
        else:
            return self._object_id
        self._object_id = meta["object_id"]
        self._name = meta.get("name")
        self._created_at = meta.get("created_at")
        return self._object_id

    async def _op(self, operation: Callable[..., D.Operation], timeout: float | None = 60, **fields: Any) -> Any:
        """The operation type `operation` on this object, built with its id and `fields`."""
        oid = self._object_id if self._object_id is not None and self._created_at is not None else await self._oid()
        return await _request(self._kind, operation(oid=oid, **fields), timeout=timeout)

    @blocking_method
    async def hydrate(self, client: Any = None) -> Any:
        _no_client(client)
        await self._oid()
        return self

    @blocking_method
    async def info(self) -> ObjectInfo:
        """The object's name (None for an ephemeral one) and when it was created."""
        await self._oid()
        return ObjectInfo(self._name, datetime.fromtimestamp(self._created_at or 0, tz=timezone.utc), None)


_KINDS: dict[str, type[StoredObject]] = {}


def register(cls: type[StoredObject]) -> type[StoredObject]:
    _KINDS[cls._kind] = cls
    return cls


def aio_generator(impl: Callable[..., Any]) -> Any:
    """Decorator for an async generator method: a blocking iterator with an `.aio` async iterator."""

    class _Descriptor:
        def __get__(self, obj: Any, objtype: Any = None) -> Any:
            if obj is None:
                return self
            return GeneratorWithAio(functools.partial(impl, obj), impl.__name__)

    return _Descriptor()


KIND_DICT = P.DICT
KIND_QUEUE = P.QUEUE
