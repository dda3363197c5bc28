"""Calls: accepting them and their inputs, retries, cancelling, and delivering their outputs.

A call's inputs go to the scheduler through the `Executor`; outputs come back from `containers` (or the
supervisor, or a failed start) and are delivered here: to the caller's connection, to a spawned call's
waiters and to its stored result.
"""

from __future__ import annotations

import asyncio
import logging
import math
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
# A map's chunks (see `_add_inputs`): the scheduler queues, assigns and times each as one, so a chunk is
# cut to run for about `CHUNK_SECONDS` at the function's observed time per input, at most `MAX_CHUNK`
# inputs. Before any input of the function finished, nothing is known of its inputs' time: fewer than
# `BLIND_MIN` inputs travel each on its own (a small map of slow inputs fans out over as many
# containers), more in chunks of `BLIND_CHUNK`. No chunk holds more than its share of the ready
# containers, so a map still spreads over them. At about a millisecond a chunk counts as a short input
# for the scheduler, which then hands a container the next before it is done.
CHUNK_SECONDS = 0.001
MAX_CHUNK = 1024  # (a trivial input takes a container about 2 µs: a millisecond's chunk holds ~500 of them)
BLIND_CHUNK = 8
BLIND_MIN = 256
# The time per input follows a faster one at once and a slower one by this weight per report: an input
# stalled on a loaded machine (the process descheduled) should not cut the map into tiny chunks.
SLOWER_WEIGHT = 0.1

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


def alone(args: Any) -> bytes:
    """An input of a map's chunk (`P.CallInput.args`) as the arguments of an input of its own: pickled,
    if it travelled as plain values (only the container unpickles; this pickles what msgpack decoded)."""
    return args if type(args) is bytes else pickle.dumps((tuple(args), {}), 5)


def error_outputs(inputs: list[P.CallInput], out: dict[str, Any]) -> list[P.CallOutput]:
    """The same error output for every input of `inputs` (each input of a chunk), or for input 0."""
    items = []
    for i in inputs:
        if type(i.args) is bytes:
            items.append(P.CallOutput(i.idx, ERROR, out))
        else:
            items += [P.CallOutput(i.idx + k, ERROR, out) for k in range(len(i.args))]
    return items or [P.CallOutput(0, ERROR, out)]


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
            peer.proto.send(P.Outputs(call=call_id, items=error_outputs(inputs, {"code": code, "msg": text})))

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
        new_id = self.executor.input_ids.function_input
        inputs = self.inputs
        n = 0
        for item in items:
            args = item.args
            if isinstance(args, bytes):
                iid = new_id()
                inputs[iid] = InputRecord(iid, call, item.idx, args, item.method)
                ids.append(iid)
                n += 1
                continue
            size = self._chunk_size(call, len(args))
            for start in range(0, len(args), size):
                part = args[start:start + size]
                iid = new_id()
                inputs[iid] = InputRecord(iid, call, item.idx + start, part if size > 1 else alone(part[0]),
                                          item.method)
                ids.append(iid)
            n += len(args)
        call.outstanding += n
        if call.kind == P.KIND_SPAWN:
            call.input_ids.extend(ids)
        if ids:
            self.executor.submit(call.fn.function_id, ids, callers=call.kind in _BLOCKING)

    def _chunk_size(self, call: CallRecord, n: int) -> int:
        """How many of `n` consecutive inputs of a map go in one chunk (1: each on its own). Only a
        function that runs one input at a time, unbatched, runs chunks."""
        fn = call.fn
        cfg = fn.config
        if call.kind != P.KIND_MAP or cfg.max_inputs != 1 or fn.defn.batch is not None or fn.is_generator:
            return 1
        # An input run on its own costs the container tens of microseconds more than one of a chunk (see
        # `runtime._chunk`): its time cuts chunks only until a chunk's inputs were timed.
        t = fn.chunk_seconds if fn.chunk_seconds is not None else fn.input_seconds
        if t is None:
            size = 1 if n < BLIND_MIN else BLIND_CHUNK
        else:
            size = int(CHUNK_SECONDS / max(t, 1e-7))
        ready = len(self.executor.ready_containers(fn.function_id))
        if ready > 1:
            size = min(size, math.ceil(n / ready))
        return max(1, min(size, MAX_CHUNK))

    def observed(self, fn: FunctionRecord, seconds: float, n: int, chunk: bool = False) -> None:
        """`n` inputs of the function took `seconds` in all (`chunk`: inputs of a map's chunk): its time per
        input (how chunks are cut)."""
        per = seconds / n
        t = fn.chunk_seconds if chunk else fn.input_seconds
        t = per if t is None or per < t else (1 - SLOWER_WEIGHT) * t + SLOWER_WEIGHT * per
        if chunk:
            fn.chunk_seconds = t
        else:
            fn.input_seconds = t

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
            self.deliver_all([self.inputs[i] for i in still_queued], P.TERMINATED, None)

    def fail_inputs(self, ins: FailInputs, init_failure: dict[str, Any] | None = None) -> None:
        by_call: dict[str, list] = {}
        status, data = ERROR, {"code": "execution", "msg": ins.reason}
        if init_failure is not None:
            status, data = P.INIT_FAILURE_STATUS, init_failure
        for iid in ins.inputs:
            inp = self.inputs.get(iid)
            if inp is None:
                if self.executor.input_ids.is_web(iid) and self.web is not None:
                    self.web.failed(iid, ins.reason, init_failure.get("repr") if init_failure is not None else None)
                continue
            # Lost inputs (their containers crashed) were already re-run up to the scheduler's crash limit,
            # which does not use up `retries=` (see core.scheduler): they fail now. Of a map's chunk, the
            # input it was running (its first left) is the poison one: the others run again.
            if ins.lost and type(inp.args) is list and init_failure is None:
                pool = self.executor.pool(inp.call.fn.function_id)
                keys = inp.keys_left()
                if len(keys) > 1 and pool is not None and pool.active:
                    inp.left = set(keys[1:])
                    self.deliver_chunk(inp, keys[:1], [status], [data], 0.0)
                    self.executor.submit(inp.call.fn.function_id, [inp.input_id])
                    continue
            by_call.setdefault(inp.call.call_id, []).append(inp)
        for inps in by_call.values():
            self.deliver_all(inps, status, data)

    def _flush_calls_soon(self) -> None:
        if not self._calls_flush_due:
            self._calls_flush_due = True
            asyncio.get_running_loop().call_soon(self._flush_calls)

    def _flush_calls(self) -> None:
        self._calls_flush_due = False
        self.state.flush_calls()

    # --- retries -----------------------------------------------------------------------------------
    def retry_later(self, inp: InputRecord, new_id: bool = False) -> bool:
        """Run `inp` again after the retry policy's delay, if it allows one more; `new_id`: it is an input
        of a chunk (`member`), queued alone under an id of its own."""
        delay = retry_after(inp.call.fn.retries, inp.call.kind, inp.attempt)
        if delay is None:
            return False
        if inp.call.call_id not in self.calls:
            return False
        inp.attempt += 1
        if new_id:
            inp.input_id = self.executor.input_ids.function_input()
            self.inputs[inp.input_id] = inp
        log.info("retrying input %s of %s (attempt %d) in %.2fs", inp.input_id, inp.call.fn.tag, inp.attempt, delay)

        def requeue() -> None:
            if inp.input_id in self.inputs and self.executor.pool(inp.call.fn.function_id) is not None:
                self.executor.submit(inp.call.fn.function_id, [inp.input_id])

        asyncio.get_running_loop().call_later(delay, requeue)
        return True

    # --- outputs -----------------------------------------------------------------------------------
    def deliver_all(self, inps: list[InputRecord], status: int, data: Any) -> None:
        """Every input of `inps` (each input a chunk has left, for a chunk) ends with the same output."""
        singles = []
        for inp in inps:
            if type(inp.args) is bytes:
                singles.append((inp, status, data))
            else:
                keys = inp.keys_left()
                self.inputs.pop(inp.input_id, None)
                self.deliver_chunk(inp, keys, [status] * len(keys), [data] * len(keys), 0.0)
        if singles:
            self.deliver(singles)

    def member(self, inp: InputRecord, key: int) -> InputRecord:
        """Input `key` of chunk `inp` as an input of its own (to retry it alone, or to time it out): it
        takes the chunk's id only if it is the chunk's last."""
        assert type(inp.args) is list
        return InputRecord(-1, inp.call, inp.idx + key, alone(inp.args[key]), inp.method, inp.attempt)

    def chunk_outputs(self, inp: InputRecord, row: P.ChunkOutputRow) -> bool:
        """Outputs of some inputs of chunk `inp` (its container holds it): each input is retried or
        delivered on its own. True when the chunk has none left (it is done)."""
        n = len(inp.args)
        keys, statuses, datas = row.keys, row.status, row.data
        if inp.left is not None and inp.sent is not None:  # positions in what was sent: the chunk's keys
            sent = inp.sent
            keys = [sent[k] for k in keys if k < len(sent)]
        inp.seconds += row.seconds
        if keys:
            self.observed(inp.call.fn, row.seconds, len(keys), chunk=True)
        if inp.left is None and len(keys) == n and P.FAILURE not in statuses and P.TIMEOUT not in statuses:
            self.inputs.pop(inp.input_id, None)  # the hot path: the whole chunk, none to retry
            self.deliver_chunk(inp, keys, statuses, datas, row.seconds)
            return True
        left = inp.left if inp.left is not None else set(range(n))
        out_keys, out_status, out_data = [], [], []
        for key, status, data in zip(keys, statuses, datas):
            if key not in left:
                continue  # reported already (a stale repeat)
            left.discard(key)
            if status in (P.FAILURE, P.TIMEOUT):
                one = self.member(inp, key)
                if self.retry_later(one, new_id=True):
                    continue
            out_keys.append(key)
            out_status.append(status)
            out_data.append(data)
        inp.left = left
        if not left:
            self.inputs.pop(inp.input_id, None)
        if out_keys:
            self.deliver_chunk(inp, out_keys, out_status, out_data, row.seconds)
        return not left

    def chunk_timed_out(self, inp: InputRecord, failure: dict[str, Any]) -> None:
        """Chunk `inp` ran past its deadline in a container that did not stop it: the input it was running
        (its first left) timed out; the rest never started and go back to the queue."""
        keys = inp.keys_left()
        first, rest = keys[0], keys[1:]
        one = self.member(inp, first)
        inp.left = set(rest)
        if not self.retry_later(one, new_id=True):
            self.deliver_chunk(inp, [first], [P.TIMEOUT], [failure], 0.0)
        if rest:
            self.executor.submit(inp.call.fn.function_id, [inp.input_id])
        else:
            self.inputs.pop(inp.input_id, None)

    def deliver_chunk(self, inp: InputRecord, keys: list[int], statuses: list[int], datas: list[Any],
                      seconds: float) -> None:
        """Outputs of inputs of chunk `inp` (its record already dropped if none are left): to the
        caller in one row, to the history as one map row (successes) or a row each (the rest)."""
        call = inp.call
        fn = call.fn
        n = len(keys)
        finished = self.observer.input_finished
        ok = statuses.count(P.SUCCESS)
        if ok:
            self.observer.inputs_succeeded(fn.function_id, fn.app_id, fn.tag, call.call_id, ok, seconds * ok / n,
                                           inp.attempt)
        if ok < n:
            for key, status, data in zip(keys, statuses, datas):
                if status != P.SUCCESS:
                    finished(fn.function_id, fn.app_id, fn.tag, call.call_id, call.kind, inp.idx + key, status,
                             seconds / n, inp.attempt, data)
        call.outstanding -= n
        live = self.calls.get(call.call_id)
        if live is None:
            return
        if call.subscriber is not None:
            call.subscriber.proto.send(P.Outputs(call=call.call_id, items=[],
                                                 chunks=[P.CallChunkOutput(inp.idx, keys, statuses, datas)]))
        if call.outstanding <= 0 and call.inputs_closed:
            del self.calls[call.call_id]
            self.observer.call_closed(call.call_id)

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
