"""When a container does not keep its limits: what the control plane does about it and tells the user.

The scheduler decides (an input past its `timeout`, a start-up past its `startup_timeout`, a pool that
keeps failing to start); this executes those decisions: fail the inputs with the error the container
would have raised, kill the container, and say so to the app's log readers and the server log. It
also notices exit hooks cut short by the stop grace period.
"""

from __future__ import annotations

import logging
import pickle
import signal
import time
from typing import TYPE_CHECKING, Any

from .. import _protocol as P
from ..backends import ExitInfo
from ..exception import ExecutionError, FunctionTimeoutError
from .core.scheduler import DEADLINE_GRACE_SECONDS, InputsTimedOut, RestartBackoff, StartupTimedOut
from .records import STOP_GRACE_SECONDS, ContainerRecord

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from ..backends import Backend
    from .calls import CallService
    from .records import Registry

log = logging.getLogger("homeport.server")


def failure_of(exc: Exception) -> dict[str, Any]:
    """A failure map for an exception the control plane raises on a container's behalf (the SDK
    re-raises it with its type, as if the container had)."""
    return P.failure(pickle.dumps(exc), repr(exc), "")


def timeout_error(name: str, timeout: float) -> FunctionTimeoutError:
    """The container's own message (runtime `run_input`), so a user sees one text whoever enforced it."""
    return FunctionTimeoutError(
        f"Function '{name}' timed out after {timeout:g}s (timeout={timeout:g}). "
        "Raise `timeout` in the decorator if the input needs longer."
    )


class Supervisor:
    def __init__(self, registry: Registry, calls: CallService,
                 record_log: Callable[[ContainerRecord, str, str], None], backend: Backend,
                 spawn: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
        self.inputs = registry.inputs
        self.containers = registry.containers
        self.functions = registry.functions
        self.calls = calls
        self.record_log = record_log
        self.backend = backend
        self.spawn = spawn

    def inputs_timed_out(self, ins: InputsTimedOut) -> None:
        items = []
        for iid in ins.inputs:
            inp = self.inputs.get(iid)
            if inp is None:
                continue
            name = inp.call.fn.tag if inp.method is None else f"{inp.call.fn.tag}.{inp.method}"
            if type(inp.args) is list:  # a map's chunk: the input it was running timed out
                self.calls.chunk_timed_out(inp, failure_of(timeout_error(name, ins.timeout)))
            elif not self.calls.retry_later(inp):
                items.append((inp, P.TIMEOUT, failure_of(timeout_error(name, ins.timeout))))
        if items:
            self.calls.deliver(items)
        rec = self.containers.get(ins.container)
        if rec is not None:
            self._kill(rec, f"an input ran past its timeout ({ins.timeout:g}s) by {DEADLINE_GRACE_SECONDS:g}s "
                            "without stopping (the user code caught the timeout, or was in a call that signals "
                            "cannot interrupt)", " Its exit hooks did not run.")

    def startup_timed_out(self, ins: StartupTimedOut) -> None:
        rec = self.containers.get(ins.container)
        if rec is None:
            return
        st = ins.startup_timeout
        rec.init_failure = failure_of(ExecutionError(
            f"Container for '{rec.fn.tag}' did not start: importing the module and running the enter hooks did "
            f"not finish within {st:g}s (startup_timeout={st:g}), and the container did not stop by itself. "
            "Make start-up faster or raise `startup_timeout`."
        ))
        self._kill(rec, f"its start-up ran past startup_timeout ({st:g}s) by {DEADLINE_GRACE_SECONDS:g}s")

    def start_failed(self, ins: RestartBackoff, rec: ContainerRecord | None) -> None:
        """Say why a pool's containers fail to start: the traceback once per distinct failure, a short
        line when it repeats (a crash loop must be visible, not a silent restart every second)."""
        fn = self.functions.get(ins.pool)
        if fn is None:
            return
        failure = (rec.init_failure if rec is not None else None) or {}
        log.warning("container %s of %s failed during start-up (%d in a row): %s; next start in %gs (backoff)",
                    ins.container, fn.tag, ins.failures, failure.get("repr"), ins.delay)
        if rec is None:
            return
        key = failure.get("tb") or failure.get("repr") or "unknown"
        if key != fn.start_failure_key:
            fn.start_failure_key = key
            text = f"Container {ins.container} of '{fn.tag}' failed during start-up:\n{key}"
        else:
            text = (f"Container {ins.container} of '{fn.tag}' failed during start-up again with the same error "
                    f"({ins.failures} times in a row)")
        self.publish(rec, f"{text.rstrip()}\nNo new container of '{fn.tag}' starts for {ins.delay:g}s "
                          "(start-up failure backoff).")

    def died_starting(self, rec: ContainerRecord, info: ExitInfo) -> None:
        """A container that exited before it was ready, unasked and without reporting a failure (the
        kernel killed it for memory, a signal, `os._exit` in the module), crashed during start-up:
        its pool backs off (no new container every few milliseconds that nobody hears of) and, should
        the crashes go on past the scheduler's limit in an ephemeral app, the inputs waiting fail with
        what happened (see `core.scheduler`)."""
        if rec.init_failure is not None or rec.ready_at is not None or rec.state == "stopping" or rec.killed_because:
            return
        hint = f" {info.hint()}" if info.hint() else ""
        rec.init_failure = failure_of(ExecutionError(
            f"Container {rec.container_id} of '{rec.fn.tag}' {info.describe()} during start-up (importing the "
            f"module and running the enter hooks), before it could run an input.{hint}"
        ))

    def exited(self, rec: ContainerRecord, info: ExitInfo) -> None:
        """A container asked to stop that was SIGKILLed once the grace period ran out was still running
        its exit hooks (or ignoring SIGTERM): tell the user that their clean-up did not finish."""
        if rec.stop_requested_at is None or rec.killed_because or info.signal != signal.SIGKILL:
            return
        if rec.ready_at is None or not rec.exit_hooks:  # no exit hook was owed: nothing was cut short
            return
        if info.oom_limit_mib is not None or time.monotonic() - rec.stop_requested_at < 0.9 * STOP_GRACE_SECONDS:
            return
        text = (f"Container {rec.container_id} of '{rec.fn.tag}' was killed {STOP_GRACE_SECONDS:g}s after it was "
                "asked to stop, so its exit hooks were cut short. Make them finish within the grace period.")
        log.warning("%s", text)
        self.publish(rec, text)

    def _kill(self, rec: ContainerRecord, because: str, note: str = "") -> None:
        """Kill a container that ignored its own deadline: it cannot be trusted to run its exit hooks,
        and while it lingers it holds cpu and memory its replacement needs."""
        rec.state = "stopping"
        rec.killed_because = because
        log.warning("killing container %s of %s: %s", rec.container_id, rec.fn.tag, because)
        self.publish(rec, f"Container {rec.container_id} of '{rec.fn.tag}' was killed: {because}.{note}")
        self.spawn(self.backend.kill(rec.container_id))

    def publish(self, rec: ContainerRecord, text: str) -> None:
        """Tell the app's log readers something about a container, on stderr, as if it had printed it."""
        for line in text.splitlines():
            self.record_log(rec, "system", line + "\n")
