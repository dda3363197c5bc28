"""What runs inside every container.

Start-up: connect to the control plane, say hello with the container's id and token, receive the
function definition, import the user's module (global scope runs here), run enter hooks, report
ready. Then: a reader thread takes input batches off the socket; the main thread runs them in order
and sends outputs back in batches; SIGTERM runs the exit hooks and leaves.
"""

from __future__ import annotations

import collections
import inspect
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import _context
from .. import _protocol as P
from .._protocol.definition import Batch, FunctionDefinition, definition_from_wire
from ..exception import ExecutionError, InputCancellation, InvalidError
from ._batch import BatchError, check_outputs, zip_inputs
from ._chunk import run_chunk
from ._concurrent import serve_concurrent
from ._conn import Connection, watch_control_plane
from ._cuda import cuda_problem
from ._inbox import SocketInbox
from ._load import _hide_gpus, load_service
from ._outbox import FLUSH_AFTER_SECONDS, Outbox
from ._run import (
    InputTimeout,
    Run,
    Service,
    Shutdown,
    call_input,
    dumps_result,
    failure_of,
    run_one,
)
from ._web import WebServers, claim_ports, prefix_from_env

if TYPE_CHECKING:
    import asyncio

    from ._web import WebServers

_PING, _PONG = P.Ping(), P.Pong()


class Runtime:
    def __init__(self, conn: Connection, defn: FunctionDefinition, container_id: str,
                 preloaded: Service | None = None) -> None:
        self.conn = conn
        self.preloaded = preloaded
        self.defn = defn
        self.container_id = container_id
        self.tag = defn.tag
        self.timeout = float(defn.timeout)
        self.max_inputs = defn.max_inputs
        self.batch: Batch | None = defn.batch
        self._async_sink: Callable[[Any], object] | None = None  # set in concurrent mode: hands reader-thread messages to the event loop
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.current: int | None = None
        self.cancelled: set[int] = set()
        self.pending: collections.deque = collections.deque()
        self.service: Service | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main_thread = threading.main_thread()
        self.started = False  # enter hooks all ran: exit hooks are owed
        self.web: WebServers | None = None  # the container's web endpoints (`_web.WebServers`), when it has any

    # --- start-up ----------------------------------------------------------------------------------
    def start(self, timeline: dict[str, float] | None = None) -> bool:
        timeline = dict(timeline or {})
        t = time.monotonic()
        startup_timeout = float(self.defn.startup_limit)
        signal.signal(signal.SIGALRM, self._on_alarm)
        signal.setitimer(signal.ITIMER_REAL, startup_timeout)
        hook = "import"
        try:
            if self.defn.web:  # before the enter hooks: a server class's hooks start its server
                claim_ports(self.defn.web)
            if self.preloaded is not None:  # a copy of a snapshot: imports and snap hooks already ran
                self.service = self.preloaded
            else:
                # Started without its snapshot: what would have run before it still sees no GPU.
                gpus = _hide_gpus() if self.defn.snapshot else None
                self.service = load_service(self.defn)
                timeline["import"] = time.monotonic() - t
                for name, fn in self.service.snap_hooks:
                    hook = name
                    t = time.monotonic()
                    fn()
                    timeline[f"enter:{name}"] = time.monotonic() - t
                if gpus is not None:
                    os.environ.update(gpus)
                    if cuda_problem():
                        raise RuntimeError(cuda_problem())
            for name, fn in self.service.enter_hooks:
                hook = name
                t = time.monotonic()
                result = fn()
                if inspect.isawaitable(result):
                    self._run_async(result)
                timeline[f"enter:{name}"] = time.monotonic() - t
            if self.defn.web:
                hook = "web server"
                self.web = web = WebServers(self.tag, self.defn.web, prefix_from_env(), self.max_inputs)
                web.start(self.service, timeline)
            signal.setitimer(signal.ITIMER_REAL, 0)
        except Shutdown:
            signal.setitimer(signal.ITIMER_REAL, 0)
            raise
        except InputTimeout:
            if hook == "import":
                what = "importing the module"
            elif hook == "web server":
                what = "starting the web server"
            else:
                what = f"enter hook '{hook}'"
            msg = (
                f"Container for '{self.tag}' did not start: {what} did not finish within {startup_timeout:g}s "
                f"(startup_timeout={startup_timeout:g}). Make start-up faster or raise `startup_timeout`."
            )
            self._init_failure(ExecutionError(msg))
            return False
        except BaseException as exc:
            signal.setitimer(signal.ITIMER_REAL, 0)
            # Not printed here: the control plane shows the traceback to the app's log readers once per
            # distinct failure, rather than once per restart of a crash-looping pool.
            self._init_failure(exc)
            return False
        self.started = True
        has_exit = bool(self.service is not None and self.service.exit_hooks)
        self.conn.send(P.Ready(timeline=timeline, exit_hooks=has_exit))
        return True

    def _init_failure(self, exc: BaseException) -> None:
        self.conn.send(P.InitFailure(failure=failure_of(exc)))

    # While a map's chunk runs (`_chunk`), one timer serves its inputs: since when the one running now
    # (or the gap between two) has been running; the timer fired early for it runs on for its own rest.
    chunk_input_since: float | None = None

    def _on_alarm(self, signum, frame) -> None:
        since = self.chunk_input_since
        if since is not None:
            left = since + self.timeout - time.monotonic()
            if left > 0:
                signal.setitimer(signal.ITIMER_REAL, left)
                return
        raise InputTimeout()

    def _on_cancel_signal(self, signum, frame) -> None:
        if self.current is not None and self.current in self.cancelled:
            raise InputCancellation("Input was cancelled by user")

    def _on_term(self, signum, frame) -> None:
        # Once: a second SIGTERM must not interrupt the way out before the exit hooks run.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Shutdown()

    # --- the input loop ----------------------------------------------------------------------------
    def _watchdog(self) -> None:
        watch_control_plane(self.conn, self.container_id)

    def reader(self) -> None:
        threading.Thread(target=self._watchdog, name="homeport-watchdog", daemon=True).start()
        while True:
            try:
                msg = self.conn.recv()
            except OSError:
                msg = None
            if msg is None:
                if self._async_sink is not None:
                    self._async_sink(None)
                self.inbox.put(None)
                return
            if isinstance(msg, P.Ping):  # liveness: answered here, whatever the user code is doing
                self.conn.send(_PONG)
                continue
            sink = self._async_sink
            if sink is not None:
                sink(msg)
                continue
            if isinstance(msg, P.Inputs):
                self.inbox.put(msg.items)
            elif isinstance(msg, P.Cancel):
                ids = set(msg.ids)
                self.cancelled |= ids
                self.inbox.put(())  # wake the main loop so it drops cancelled inputs it holds
                if self.current in ids:
                    assert self._main_thread.ident is not None  # the main thread is running
                    signal.pthread_kill(self._main_thread.ident, signal.SIGUSR1)

    def serve(self) -> None:
        if self.batch is not None:
            return self._serve_batched()
        if self.max_inputs > 1:
            return serve_concurrent(self)
        signal.signal(signal.SIGUSR1, self._on_cancel_signal)
        feed = SocketInbox(self)  # this thread reads the socket while it waits (see `_inbox`)
        outbox = Outbox(self, start=False)
        feed.start(outbox.thread)
        pending = self.pending
        while True:
            if not pending:
                outbox.flush()
                batch = feed.next_inputs()
                if batch is None:
                    return
                pending.extend(batch)
            while True:  # take whatever else has arrived, to batch outputs
                try:
                    more = self.inbox.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self.inbox.put(None)
                    break
                pending.extend(more)
            if not pending:
                continue
            item = pending.popleft()
            if type(item.args) is list:  # a map's chunk: each of its inputs on its own (see `_chunk`)
                feed.running()  # (a long chunk: the guard reads meanwhile, for pings and cancellations)
                run_chunk(self, item, outbox, pending)
                feed.idle()
                continue
            iid = item.iid
            if iid in self.cancelled:
                outbox.add(P.OutputRow(iid, P.TERMINATED, None))
                continue
            feed.running()
            result = self.run_input(item)
            feed.idle()
            if not pending and result.status != P.TIMEOUT:
                outbox.send(result)  # nothing else to run: out now, without waking the flusher thread
                continue
            outbox.add(result)
            if result.status == P.TIMEOUT:
                # The user code was interrupted mid-flight; its state is suspect, so this container
                # hands back what it has not started and leaves (the control plane replaces it).
                outbox.flush(release=[it.iid for it in pending], leaving=True)
                pending.clear()
                raise Shutdown()
            if not pending or outbox.held_for() > FLUSH_AFTER_SECONDS:
                outbox.flush()

    def _serve_batched(self) -> None:
        """`@modal.batched`: gather up to `max_batch_size` inputs for at most `wait_ms`, run them as one call."""
        threading.Thread(target=self.reader, name="homeport-reader", daemon=True).start()
        assert self.batch is not None  # serve() chose this loop for a batched function
        max_size, wait = self.batch.max_batch_size, self.batch.wait_ms / 1000
        pending = self.pending
        while True:
            if not pending:
                items = self.inbox.get()
                if items is None:
                    return
                pending.extend(items)
            deadline = time.monotonic() + wait
            while len(pending) < max_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    items = self.inbox.get(timeout=remaining)
                except queue.Empty:
                    break
                if items is None:
                    self.inbox.put(None)
                    break
                pending.extend(items)
            batch: list[P.InputRow] = []
            outputs: list[P.OutputRow] = []
            while pending and len(batch) < max_size:
                item = pending.popleft()
                if item.iid in self.cancelled:
                    outputs.append(P.OutputRow(item.iid, P.TERMINATED, None))
                else:
                    batch.append(item)
            if batch:
                outputs += self.run_batch(batch)
            timed_out = any(o.status == P.TIMEOUT for o in outputs)
            if timed_out:
                self._flush(outputs, release=[it.iid for it in pending], leaving=True)
            else:
                self._flush(outputs)
            if timed_out:
                pending.clear()
                raise Shutdown()

    def run_batch(self, items: list[P.InputRow]) -> list[P.OutputRow]:
        return run_one(self, items, self._call_batch, batch=True)

    def _call_batch(self, run: Run) -> None:
        """One call for the batch: a list per parameter in, a list of results (one per input) out."""
        signal.setitimer(signal.ITIMER_REAL, self.timeout)
        try:
            fn = run.function()
            try:
                columns = zip_inputs(fn, self.tag, run.batch_args())
                result = fn(*columns)
                if inspect.isawaitable(result):
                    result = self._run_async(result)
                results = check_outputs(self.tag, result, len(run.items))
            except BatchError as exc:  # the inputs or outputs do not fit the function: the user's mistake
                return run.fail(InvalidError(str(exc)))
            run.done(P.SUCCESS, [dumps_result(self.tag, r) for r in results])
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def _flush(self, outputs: list[P.OutputRow], release: list[int] | None = None, leaving: bool = False,
               chunks: list[P.ChunkOutputRow] | None = None) -> None:
        """Send outputs; hand back inputs not started. `leaving`: this container takes no more inputs
        and exits, so whatever else the control plane already sent it goes back to the queue too."""
        if outputs or chunks:
            self.conn.send(P.ContainerOutputs(items=outputs, chunks=chunks or []))
        if release or leaving:
            self.conn.send(P.ContainerRelease(ids=release or [], leaving=leaving))

    def run_input(self, item: P.InputRow) -> P.OutputRow:
        self.current = item.iid
        try:
            return run_one(self, [item], self._call)[0]
        finally:
            self.current = None

    def _call(self, run: Run) -> None:
        signal.setitimer(signal.ITIMER_REAL, self.timeout)
        try:
            call_input(self, run, self._run_async)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def _run_async(self, awaitable):
        if self._loop is None:
            import asyncio

            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(awaitable)

    def shutdown(self) -> None:
        """Run the exit hooks, each whatever the others did; a failing one is reported, not hidden."""
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.setitimer(signal.ITIMER_REAL, 0)
        if self.web is not None:  # stop taking requests first; lifespan shutdown runs before the exit hooks
            self.web.stop()
        if self.service is None or not self.started:
            return
        for name, fn in self.service.exit_hooks:
            try:
                result = fn()
                if inspect.isawaitable(result):
                    self._run_async(result)
            except BaseException:
                print(f"Exception in exit hook '{name}' of '{self.tag}' (the other exit hooks still run):",
                      file=sys.stderr)
                traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()


def main(preloaded: Service | None = None, started_at: float | None = None) -> None:
    """A container's life. `preloaded`: forked from a snapshot template that already loaded the
    user's code; `started_at`: when the backend asked for this container (forked ones only)."""
    timeline: dict[str, float] = {}
    if started_at is not None:
        timeline["fork" if preloaded is None else "restore"] = max(0.0, time.time() - started_at)
    elif os.environ.get(P.ENV_STARTED_AT):  # a fresh process: its start (sandbox, interpreter, runtime imports)
        try:
            timeline["process"] = max(0.0, time.time() - float(os.environ[P.ENV_STARTED_AT]))
        except ValueError:
            pass
    address = os.environ[P.ENV_SERVER_ADDRESS]
    cid = os.environ[P.ENV_CONTAINER_ID]
    token = os.environ.pop(P.ENV_CONTAINER_TOKEN, "")
    if os.environ.get(P.ENV_PRIVATE_NETWORK) == "1":
        from ._web import loopback_up

        loopback_up()
    if os.environ.get(P.ENV_MODAL_ALIAS, "1") == "1":
        from .. import _modal_alias

        _modal_alias.install()
    _context.runtime_process = True  # modal.is_local() is False here (and in forks), True in subprocesses
    conn = Connection(address)
    conn.send(P.Hello(id=0, role="container", cid=cid, token=token, v=P.PROTOCOL_VERSION))
    reply = conn.recv()
    if not isinstance(reply, P.Result) or not reply.ok:
        print(f"homeport runtime: control plane refused container {cid}: {reply}", file=sys.stderr)
        sys.exit(3)
    defn = definition_from_wire(reply.v)
    _context.container = (cid, token, defn.app_id)
    runtime = Runtime(conn, defn, cid, preloaded)
    signal.signal(signal.SIGTERM, runtime._on_term)
    try:
        if not runtime.start(timeline):
            sys.exit(1)
        runtime.serve()
    except Shutdown:
        pass
    finally:
        runtime.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
