"""Arguments and results across the wire: cloudpickle, with errors that name the function and the type."""

from __future__ import annotations

from typing import Any

import cloudpickle

from . import _pickle
from . import _protocol as P
from .exception import (
    DeserializationError,
    ExecutionError,
    FunctionTimeoutError,
    RemoteError,
    SerializationError,
    error_from_code,
)

ERROR = P.ERROR  # an output row of a platform error: data is {"code", "msg"}


def _unpicklable_part(args: tuple, kwargs: dict) -> Any:
    for value in (*args, *kwargs.values()):
        try:
            cloudpickle.dumps(value)
        except Exception:
            return value
    return None


def serialize_args(tag: str, args: tuple, kwargs: dict) -> bytes:
    try:
        data = _pickle.dumps((args, kwargs))
    except Exception as exc:
        bad = _unpicklable_part(args, kwargs)
        what = type(bad).__qualname__ if bad is not None else "an argument"
        raise SerializationError(
            f"Could not serialize the arguments of '{tag}': a value of type {what} cannot be pickled "
            f"({type(exc).__name__}: {exc}). Pass plain data, or create the object inside the function."
        ) from None
    if len(data) > P.MAX_PAYLOAD_BYTES:
        raise SerializationError(
            f"The arguments of '{tag}' take {len(data)} bytes pickled, over the limit of {P.MAX_PAYLOAD_BYTES} "
            "bytes per call. Put big data in a Volume and pass its path."
        )
    return data


def deserialize(tag: str, data: bytes) -> Any:
    try:
        return cloudpickle.loads(data)
    except ModuleNotFoundError as exc:
        raise DeserializationError(
            f"Could not deserialize the result of '{tag}' because the '{exc.name}' module is not available "
            "in the local environment."
        ) from None
    except Exception as exc:
        raise DeserializationError(f"Could not deserialize the result of '{tag}': {exc}") from None


def exception_from_failure(tag: str, failure: dict[str, Any]) -> BaseException:
    """The user's exception as raised in the container, with the remote traceback attached as a note."""
    pickled, text, tb = failure.get("exc"), failure.get("repr", ""), failure.get("tb", "")
    exc: BaseException
    if pickled is not None:
        try:
            exc = cloudpickle.loads(pickled)
        except Exception as err:
            exc = ExecutionError(
                f"Could not deserialize remote exception due to local error: {err}. "
                f"Here is the remote traceback:\n{tb}"
            )
            return exc
        if not isinstance(exc, BaseException):
            return ExecutionError(f"Got remote exception of incorrect type {type(exc)}")
    else:
        exc = RemoteError(text)
    if tb and hasattr(exc, "add_note"):
        exc.add_note(f"\nRemote traceback (from '{tag}' in its container):\n{tb.rstrip()}")
    return exc


def decode_output(tag: str, status: int, data: Any) -> Any:
    """The value of a successful output, or raise what the output says went wrong."""
    if status == P.SUCCESS:
        return deserialize(tag, data)
    raise output_error(tag, status, data)


def output_error(tag: str, status: int, data: Any) -> BaseException:
    if status in (P.FAILURE, P.INIT_FAILURE_STATUS, P.TIMEOUT, P.INTERNAL):
        exc = exception_from_failure(tag, data)
        if status == P.TIMEOUT and not isinstance(exc, FunctionTimeoutError):
            return FunctionTimeoutError(str(exc))
        return exc
    if status == P.TERMINATED:
        return RemoteError(f"The call to '{tag}' was cancelled.")
    if status == ERROR:
        return error_from_code(data.get("code", "internal"), data.get("msg", ""))
    return RemoteError(f"unexpected output status {status} from '{tag}'")
