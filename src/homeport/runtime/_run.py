"""Running one input (or one batch of inputs): what the plain, batched and concurrent loops share.

`run_one` takes the input's row as the control plane sent it, deserializes the arguments, calls the
user's code (through the loop's own `call`), times it, turns whatever it raised into an output status
and serializes the output rows (`P.OutputRow`: input id, status, data, seconds, CPU seconds or None). A concurrent
loop's async inputs await in between: `run_one` is a `with Run(...)` block, which such a loop writes itself.
"""

from __future__ import annotations

import inspect
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, Protocol

import cloudpickle

from .. import _context, _pickle
from .. import _protocol as P
from ..exception import FunctionTimeoutError, InputCancellation, SerializationError


class InputTimeout(BaseException):
    """Raised by the timer (SIGALRM) in the thread running an input that ran out of time."""


class Shutdown(BaseException):
    """The container is leaving (SIGTERM, or it cannot go on): unwinds the loop, runs the exit hooks."""


_OWN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the homeport package


class Service:
    """The user's code as the container runs it: callables by method name, and lifecycle hooks."""

    def __init__(self, callables: dict[str | None, Any], instance: Any = None) -> None:
        self.callables = callables
        self.instance = instance
        self.snap_hooks: list[tuple[str, Any]] = []  # `@enter(snap=True)`: once per snapshot
        self.enter_hooks: list[tuple[str, Any]] = []
        self.exit_hooks: list[tuple[str, Any]] = []
        self.snapshot_timeline: dict[str, float] = {}  # a snapshot template's: how long its import and snap hooks took


class Sender(Protocol):
    def send(self, message: P.Message) -> None: ...


class Host(Protocol):
    """What running an input needs of the container (`_runtime.Runtime`)."""

    tag: str
    timeout: float

    @property
    def conn(self) -> Sender: ...

    @property
    def service(self) -> Service | None: ...


def user_traceback(exc: BaseException) -> str:
    """The traceback of an exception raised by the user's code, from the user's first frame (the
    runtime's own frames that called it left out, unless HOMEPORT_TRACEBACK=1)."""
    tb = exc.__traceback__
    if os.environ.get("HOMEPORT_TRACEBACK") != "1":
        while tb is not None and tb.tb_next is not None and tb.tb_frame.f_code.co_filename.startswith(_OWN_DIR + os.sep):
            tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def print_failure(exc: BaseException) -> None:
    """Print a failed input's traceback to the container's stderr (its log), the user's frames only."""
    sys.stderr.write(user_traceback(exc))


def failure_of(exc: BaseException) -> dict[str, Any]:
    tb = user_traceback(exc)
    try:
        pickled = cloudpickle.dumps(exc)
    except Exception:  # an exception that cannot be pickled still reaches the caller as text
        pickled = None
    return P.failure(pickled, repr(exc), tb)


def set_input_context(item: P.InputRow) -> None:
    """`modal.current_input_id()` / `current_function_call_id()` for the input about to run."""
    key = getattr(item, "key", None)  # an input of a chunk (`_chunk.Member`): the chunk's id and its key
    _context.input_id.set(f"in-{item.iid}" if key is None else f"in-{item.iid}-{key}")
    _context.function_call_id.set(item.call_id)


def dumps_result(tag: str, result: Any) -> bytes:
    try:
        data = _pickle.dumps(result)
    except Exception as exc:
        raise SerializationError(
            f"Function '{tag}' returned a value of type {type(result).__qualname__} that cannot "
            f"be serialized: {exc}. Return plain data (or an object that pickles) instead."
        ) from None
    if len(data) > P.MAX_PAYLOAD_BYTES:  # the control plane would close this container's connection
        raise SerializationError(
            f"Function '{tag}' returned {len(data)} bytes pickled, over the limit of "
            f"{P.MAX_PAYLOAD_BYTES} bytes per result. Write big data to a Volume and return its path."
        )
    return data


def send_item(host: Host, iid: int, value: Any) -> None:
    """One item a generator input yielded, sent as it comes."""
    host.conn.send(P.ContainerGen(input=iid, items=[dumps_result(host.tag, value)]))


def timeout_failure(host: Host, method: str | None) -> dict[str, Any]:
    name = host.tag if method is None else f"{host.tag}.{method}"
    exc = FunctionTimeoutError(
        f"Function '{name}' timed out after {host.timeout:g}s (timeout={host.timeout:g}). "
        "Raise `timeout` in the decorator if the input needs longer."
    )
    return P.failure(cloudpickle.dumps(exc), repr(exc), "")


class Run:
    """One call of the user's code for `items` (one input, or a batch run as one call): sets the input
    context, times it and, on leaving the `with` block, turns what it raised into an output status.
    The block deserializes with `args()` / `batch_args()` and reports what the call returned with
    `done(status, data)` (for a `batch`, `data` has one entry per input); `rows()` are its outputs.

    `cpu`: measure this thread's CPU time (not where the thread also runs other inputs). `timed_out` and
    `cancelled`: the exceptions that mean the loop's deadline passed or the input was cancelled."""

    __slots__ = ("batch", "c0", "cancelled", "cpu", "cpu_seconds", "data", "host", "items", "method", "seconds",
                 "status", "t0", "timed_out")

    def __init__(self, host: Host, items: list[P.InputRow], *, batch: bool = False, cpu: bool = True,
                 timed_out: type[BaseException] = InputTimeout,
                 cancelled: type[BaseException] = InputCancellation) -> None:
        self.host, self.items, self.batch, self.cpu = host, items, batch, cpu
        self.timed_out, self.cancelled = timed_out, cancelled
        self.method: str | None = items[0].method
        self.status = P.INTERNAL
        self.data: Any = None
        self.seconds = 0.0
        self.cpu_seconds: float | None = None

    def __enter__(self) -> Run:
        set_input_context(self.items[0])  # a batch reports its first input's ids (as Modal does)
        self.t0 = time.monotonic()
        self.c0 = time.thread_time() if self.cpu else 0.0
        return self

    def function(self) -> Callable[..., Any]:
        assert self.host.service is not None
        return self.host.service.callables[self.method]

    def args(self) -> tuple[tuple, dict]:
        """The one input's (args, kwargs)."""
        return cloudpickle.loads(self.items[0].args)

    def batch_args(self) -> list[tuple[tuple, dict]]:
        """Each input's (args, kwargs), for a batch."""
        return [cloudpickle.loads(it.args) for it in self.items]

    def done(self, status: int, data: Any) -> None:
        self.status, self.data = status, data

    def fail(self, exc: BaseException) -> None:
        """The call failed with `exc` (printed to the container's log, sent to the caller)."""
        print_failure(exc)
        failure = failure_of(exc)
        self.done(P.FAILURE, [failure] * len(self.items) if self.batch else failure)

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        self.seconds = time.monotonic() - self.t0
        self.cpu_seconds = time.thread_time() - self.c0 if self.cpu else None
        if exc is None or isinstance(exc, Shutdown):
            return False
        if isinstance(exc, self.timed_out):
            failure = timeout_failure(self.host, self.method)
            self.done(P.TIMEOUT, [failure] * len(self.items) if self.batch else failure)
        elif isinstance(exc, self.cancelled):
            self.done(P.TERMINATED, [None] * len(self.items) if self.batch else None)
        else:
            self.fail(exc)
        return True

    def rows(self) -> list[P.OutputRow]:
        if not self.batch:  # the hot path: one input
            return [P.OutputRow(self.items[0].iid, self.status, self.data, self.seconds, self.cpu_seconds)]
        n = len(self.items)
        cpu = self.cpu_seconds / n if self.cpu_seconds is not None else None
        return [P.OutputRow(it.iid, self.status, d, self.seconds / n, cpu) for it, d in zip(self.items, self.data)]


def run_one(host: Host, items: list[P.InputRow], call: Callable[[Run], None], batch: bool = False,
            cpu: bool = True) -> list[P.OutputRow]:
    """Run `items` (one input, or a `batch`) as one call: `call(run)` calls the user's function and reports
    with `run.done(...)`; the output rows come back, whatever the call raised (but `Shutdown`). Without
    `cpu` the rows' CPU time is None (a chunk's loop measures it once for all its inputs)."""
    with Run(host, items, batch=batch, cpu=cpu) as run:
        call(run)
    return run.rows()


def call_input(host: Host, run: Run, run_async: Callable[[Any], Any]) -> None:
    """Call the function with the one input's arguments, in this thread: a generator's items are sent as
    they come (its data is how many), a coroutine runs to its end on `run_async`."""
    item = run.items[0]
    fn = host.service.callables[item.method]  # type: ignore[union-attr]  # (run.function(), inlined: hot path)
    args, kwargs = cloudpickle.loads(item.args)
    result = fn(*args, **kwargs)
    if type(result) in _pickle.ATOMS:  # a plain value (the hot path of a map): no generator, no coroutine
        run.status, run.data = P.SUCCESS, dumps_result(host.tag, result)
        return
    finish_result(host, run, result, run_async)


def finish_result(host: Host, run: Run, result: Any, run_async: Callable[[Any], Any]) -> None:
    """What the function returned for the one input: a generator's items are sent as they come (its data
    is how many), a coroutine runs to its end on `run_async`, a value is serialized."""
    iid = run.items[0].iid
    if inspect.isasyncgen(result):
        count = 0
        while True:
            try:
                value = run_async(result.__anext__())
            except StopAsyncIteration:
                return run.done(P.GENERATOR_DONE, count)
            send_item(host, iid, value)
            count += 1
    if inspect.isgenerator(result):
        count = 0
        for value in result:
            send_item(host, iid, value)
            count += 1
        return run.done(P.GENERATOR_DONE, count)
    if inspect.isawaitable(result):
        result = run_async(result)
    run.status, run.data = P.SUCCESS, dumps_result(host.tag, result)
