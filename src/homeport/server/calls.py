"""Calls: accepting them and their inputs, retries, cancelling, and delivering their outputs.

A call's inputs go to the scheduler through the `Executor`; outputs come back from `containers` (or the
supervisor, or a failed start) and are delivered here: to the caller's connection, to a spawned call's
waiters and to its stored result.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import _protocol as P
from .core.policy import retry_after
from .core.scheduler import FailInputs
from .executor import Executor
from .observe import Observer
from .records import ERROR, CallRecord, FunctionRecord, InputRecord, Peer, Registry, new_id
from .state import State

if TYPE_CHECKING:
    from .web import WebEndpoints

log = logging.getLogger("homeport.server")

_BLOCKING = (P.KIND_UNARY, P.KIND_GENERATOR)  # calls whose caller waits on their one input

_WEB_CALL = ("A webhook function cannot be invoked for remote execution: '{tag}' is served over HTTP only "
             "(its endpoint's authentication, if any, applies). Call it at its web URL.")


def _web_inputs(fn: FunctionRecord, inputs: list[P.CallInput]) -> list[P.CallInput]:
    """The inputs that name a web endpoint of the function: those are reached over HTTP only, through
    the gateway (where `requires_proxy_auth` is checked), never as calls."""
    web = fn.defn.web
    if not web:
        return []
    names = {e.get("name") for e in web}
    return [i for i in inputs if i.method in names]


class CallService:
    def __init__(self, registry: Registry, executor: Executor, state: State, observer: Observer,
                 web: Callable[[], WebEndpoints | None]) -> None:
        self.apps = registry.apps
        self.functions = registry.functions
        self.calls = registry.calls
        self.inputs = registry.inputs
        self.containers = registry.containers
        self.executor = executor
        self.state = state
        self.observer = observer
        self._web = web
        self._calls_flush_due = False  # `state.flush_calls` is scheduled for this event-loop turn

    @property
    def web(self) -> WebEndpoints | None:
        return self._web()

    # --- calls -------------------------------------------------------------------------------------
    def current(self, fid: str) -> str:
        """A redeployed function's old id stands for the current version of the same function."""
        pool = self.executor.pool(fid)
        fn = self.functions.get(fid)
        if fn is not None and (pool is None or pool.retired):
            app = self.apps.get(fn.app_id)
            current = app and app.get("by_tag", {}).get(fn.tag)
            if current and not fn.defn.variant_of:
                return current
        return fid

    def create_call(self, peer: Peer | None, msg: P.Call, answer: bool = True,
                    restored: bool = False, scheduled: bool = False) -> str | None:
        """Start a call; if it may not run, say why (and, with `answer`, send its inputs error outputs).

        A spawned call of a deployed app is durable: its inputs are committed before the call is
        accepted (see `State`), and `restore_calls` runs them again after a restart (`restored`). A
        schedule's run is not: the schedule itself catches up on a missed run after a restart (once)."""
        fid = self.current(msg.fid)
        fn = self.functions.get(fid)
        call_id = msg.call
        kind = msg.kind
        if fn is None:
            text = f"function {fid} is not running (its app was stopped)"
            if answer:
                self.refuse(peer, call_id, msg.inputs, "not_found", text)
            return text
        if _web_inputs(fn, msg.inputs):
            text = _WEB_CALL.format(tag=fn.tag)
            if answer:
                self.refuse(peer, call_id, msg.inputs, "invalid", text)
            return text
        if call_id in self.calls:
            # Another caller's call: taking its id over would send its outputs here (a container
            # posing as it, or two forked copies that drew the same ids).
            text = f"function call id {call_id} is already in use"
            log.warning("refused a call: %s", text)
            if answer:
                self.refuse(peer, call_id, msg.inputs, "invalid", text)
            return text
        call = CallRecord(call_id, fn, kind, None if kind == P.KIND_SPAWN else peer)
        call.inputs_closed = msg.last
        self.calls[call_id] = call
        if kind == P.KIND_SPAWN and not restored:
            durable = not scheduled and (self.apps.get(fn.app_id) or {}).get("state") == "deployed"
            call.durable = durable
            if durable:
                self.state.add_call(call_id, fid, msg.inputs)
            else:  # written with the other spawns of this event-loop turn, in one transaction
                self.state.add_call_later(call_id, fid)
                self._flush_calls_soon()
        elif restored:
            call.durable = True
        self._add_inputs(call, msg.inputs)
        return None

    def refuse(self, peer: Peer | None, call_id: str, inputs: list[P.CallInput], code: str, text: str) -> None:
        """Answer inputs that will not run with an error output each (so that nothing waits for them)."""
        if peer is not None:
            out = {"code": code, "msg": text}
            items = [P.CallOutput(i.idx, ERROR, out) for i in inputs] or [P.CallOutput(0, ERROR, out)]
            peer.proto.send(P.Outputs(call=call_id, items=items))

    def put_inputs(self, peer: Peer, msg: P.MapPut) -> None:
        call = self.calls.get(msg.call)
        if call is None:
            return
        call.inputs_closed = msg.last
        refused = _web_inputs(call.fn, msg.inputs)
        if refused:
            self.refuse(peer, call.call_id, refused, "invalid", _WEB_CALL.format(tag=call.fn.tag))
        self._add_inputs(call, [i for i in msg.inputs if i not in refused])
        if call.outstanding <= 0 and call.inputs_closed:
            self.calls.pop(call.call_id, None)

    def _add_inputs(self, call: CallRecord, items: list[P.CallInput]) -> None:
        ids = []
        for item in items:
            iid = self.executor.input_ids.function_input()
            self.inputs[iid] = InputRecord(iid, call, item.idx, item.args, item.method)
            ids.append(iid)
        call.outstanding += len(ids)
        if call.kind == P.KIND_SPAWN:
            call.input_ids.extend(ids)
        if ids:
            self.executor.submit(call.fn.function_id, ids, callers=call.kind in _BLOCKING)

    async def get_call(self, call_id: str, timeout: float | None) -> dict[str, Any] | None:
        call = self.calls.get(call_id)
        if call is None:
            stored = self.state.get_call(call_id)
            if stored is None:
                raise KeyError(call_id)
            status, data = stored
            if status is None:
                return {"status": ERROR, "data": {"code": "execution", "msg": f"call {call_id} was lost when the control plane restarted"}}
            return {"status": status, "data": data}
        if call.result is None:
            fut = asyncio.get_running_loop().create_future()
            call.waiters.append(fut)
            try:
                await asyncio.wait_for(fut, timeout)
            except asyncio.TimeoutError:
                return None
            finally:
                if fut in call.waiters:
                    call.waiters.remove(fut)
        assert call.result is not None  # its waiters are woken only once the result is set
        status, data = call.result
        return {"status": status, "data": data}

    def cancel_call(self, call_id: str) -> None:
        call = self.calls.get(call_id)
        if call is None:
            return
        self.executor.send_assigned()  # a container hears of inputs before it is told to cancel them
        log.info("cancelling call %s of %s", call_id, call.fn.tag)
        ids = [i for i, inp in self.inputs.items() if inp.call is call]
        queued = set(ids)
        self.executor.cancel(call.fn.function_id, queued)
        by_container: dict[str, list[int]] = {}
        still_queued = []
        for iid in ids:
            holder = self.executor.holder_of(iid)
            if holder is None:
                still_queued.append(iid)
            else:
                by_container.setdefault(holder, []).append(iid)
        for cid, cids in by_container.items():
            rec = self.containers.get(cid)
            if rec is not None and rec.proto is not None:
                rec.proto.send(P.Cancel(ids=cids))
        if still_queued:
            self.deliver([(self.inputs[i], P.TERMINATED, None) for i in still_queued])

    def fail_inputs(self, ins: FailInputs, init_failure: dict[str, Any] | None = None) -> None:
        by_call: dict[str, list] = {}
        for iid in ins.inputs:
            inp = self.inputs.get(iid)
            if inp is None:
                if self.executor.input_ids.is_web(iid) and self.web is not None:
                    self.web.failed(iid, ins.reason, init_failure.get("repr") if init_failure is not None else None)
                continue
            status, data = ERROR, {"code": "execution", "msg": ins.reason}
            if init_failure is not None:
                status, data = P.INIT_FAILURE_STATUS, init_failure
            # Lost inputs (their containers crashed) were already re-run up to the scheduler's crash limit,
            # which does not use up `retries=` (see core.scheduler): they fail now.
            by_call.setdefault(inp.call.call_id, []).append((inp, status, data))
        for items in by_call.values():
            self.deliver(items)

    def _flush_calls_soon(self) -> None:
        if not self._calls_flush_due:
            self._calls_flush_due = True
            asyncio.get_running_loop().call_soon(self._flush_calls)

    def _flush_calls(self) -> None:
        self._calls_flush_due = False
        self.state.flush_calls()

    # --- retries -----------------------------------------------------------------------------------
    def retry_later(self, inp: InputRecord) -> bool:
        delay = retry_after(inp.call.fn.retries, inp.call.kind, inp.attempt)
        if delay is None:
            return False
        if inp.call.call_id not in self.calls:
            return False
        inp.attempt += 1
        log.info("retrying input %s of %s (attempt %d) in %.2fs", inp.input_id, inp.call.fn.tag, inp.attempt, delay)

        def requeue() -> None:
            if inp.input_id in self.inputs and self.executor.pool(inp.call.fn.function_id) is not None:
                self.executor.submit(inp.call.fn.function_id, [inp.input_id])

        asyncio.get_running_loop().call_later(delay, requeue)
        return True

    # --- outputs -----------------------------------------------------------------------------------
    def deliver(self, items: list[tuple[InputRecord, int, Any]]) -> None:
        by_call: dict[str, list] = {}
        finished = self.observer.input_finished
        for inp, status, data in items:
            self.inputs.pop(inp.input_id, None)
            call = inp.call
            fn = call.fn
            finished(fn.function_id, fn.app_id, fn.tag, call.call_id, call.kind, inp.idx, status, inp.seconds,
                     inp.attempt, data)
            call.outstanding -= 1
            by_call.setdefault(call.call_id, []).append(P.CallOutput(inp.idx, status, data))
            if call.kind == P.KIND_SPAWN:
                call.result = (status, data)
                if call.durable:
                    self.state.finish_call(call.call_id, status, data)
                else:
                    self.state.finish_call_later(call.call_id, status, data)
                    self._flush_calls_soon()
                for w in call.waiters:
                    if not w.done():
                        w.set_result(None)
        for call_id, outs in by_call.items():
            live = self.calls.get(call_id)
            if live is None:
                continue
            call = live
            if call.subscriber is not None:
                call.subscriber.proto.send(P.Outputs(call=call_id, items=outs))
            if call.outstanding <= 0 and call.inputs_closed and call.kind != P.KIND_SPAWN:
                del self.calls[call_id]
                self.observer.call_closed(call_id)

    # --- scheduled runs ----------------------------------------------------------------------------
    def run_scheduled(self, app_id: str, tag: str) -> None:
        """A schedule fired: one call of the function with no arguments, kept like a spawned call."""
        app = self.apps.get(app_id)
        fid = app and app.get("by_tag", {}).get(tag)
        if app is None or not fid:
            return
        call_id = new_id("fc")
        log.info("schedule fired: %s of app %s (%s)", tag, app.get("name") or app_id, call_id)
        self.create_call(None, P.Call(fid=fid, call=call_id, kind=P.KIND_SPAWN,
                                      inputs=[P.CallInput(0, pickle.dumps(((), {}), protocol=5), None)]), scheduled=True)
