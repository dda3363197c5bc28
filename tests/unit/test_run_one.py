"""Running one input in a container (`runtime._run.run_one`): the output rows every loop sends, whatever
the user's code returned or raised. The plain, batched and concurrent loops all run inputs through it."""

from __future__ import annotations

import asyncio
import pickle

import cloudpickle
import pytest

from homeport import _context
from homeport import _protocol as P
from homeport.runtime._run import InputTimeout, Run, Service, Shutdown, call_input, run_one


@pytest.fixture(autouse=True)
def _input_context_restored():
    """`run_one` sets the input context as a container does; the test process's own is put back after
    (`modal.current_input_id()` is None outside containers, as later tests in this process check)."""
    tokens = (_context.input_id.set(None), _context.function_call_id.set(None))
    yield
    _context.input_id.reset(tokens[0])
    _context.function_call_id.reset(tokens[1])


class _Conn:
    def __init__(self) -> None:
        self.sent: list = []

    def send(self, message) -> None:
        self.sent.append(message)


class _Host:
    def __init__(self, **callables) -> None:
        self.tag = "f"
        self.timeout = 5.0
        self.conn = _Conn()
        self.service = Service({None if k == "call" else k: v for k, v in callables.items()})


def _item(iid: int, *args, method: str | None = None) -> P.InputRow:
    return P.InputRow(iid, cloudpickle.dumps((args, {})), method, "fc-1")


def _fields(row: P.OutputRow) -> list:
    return [row.iid, row.status, row.data, row.seconds, row.cpu]


def _plain(host: _Host):
    return lambda run: call_input(host, run, asyncio.run)


def test_a_result_becomes_one_row_with_its_time_and_cpu():
    host = _Host(call=lambda x: x * 2)
    [row] = run_one(host, [_item(7, 21)], _plain(host))
    iid, status, data, seconds, cpu = _fields(row)
    assert (iid, status, pickle.loads(data)) == (7, P.SUCCESS, 42)
    assert seconds >= 0 and cpu is not None


def test_an_exception_is_a_failure_row_the_caller_can_raise(capsys):
    def boom(x):
        raise ValueError(f"bad {x}")

    host = _Host(call=boom)
    [row] = run_one(host, [_item(1, "input")], _plain(host))
    assert row.status == P.FAILURE
    assert isinstance(pickle.loads(row.data["exc"]), ValueError) and "bad input" in row.data["repr"]
    assert "ValueError: bad input" in capsys.readouterr().err  # the container's log shows it


def test_a_timeout_names_the_method_and_the_limit():
    def slow(x):
        raise InputTimeout()  # what the timer raises in the input's thread

    host = _Host(m=slow)
    [row] = run_one(host, [_item(1, 0, method="m")], _plain(host))
    assert row.status == P.TIMEOUT
    assert "Function 'f.m' timed out after 5s (timeout=5)" in row.data["repr"]


def test_a_generator_sends_its_items_then_their_count():
    def count(n):
        yield from range(n)

    host = _Host(call=count)
    [row] = run_one(host, [_item(3, 2)], _plain(host))
    assert _fields(row)[1:3] == [P.GENERATOR_DONE, 2]
    assert [pickle.loads(m.items[0]) for m in host.conn.sent] == [0, 1]
    assert all(m.input == 3 for m in host.conn.sent)


def test_shutdown_is_not_an_input_failure():
    def leave(x):
        raise Shutdown()

    host = _Host(call=leave)
    with pytest.raises(Shutdown):
        run_one(host, [_item(1, 0)], _plain(host))


def test_a_batch_gives_one_row_per_input_even_when_it_fails_before_the_call(capsys):
    def call(run: Run) -> None:
        run.function()  # no such method: fails looking it up
        run.done(P.SUCCESS, [b"x", b"y"])

    rows = run_one(_Host(), [_item(1, 0, method="gone"), _item(2, 0, method="gone")], call, batch=True)
    assert [r.iid for r in rows] == [1, 2]
    assert [r.status for r in rows] == [P.FAILURE, P.FAILURE]


def test_a_batch_shares_its_time_among_its_inputs():
    host = _Host(call=lambda xs: xs)
    rows = run_one(host, [_item(1, 0), _item(2, 0)], lambda run: run.done(P.SUCCESS, [b"a", b"b"]), batch=True)
    assert [(r.iid, r.status, r.data) for r in rows] == [(1, P.SUCCESS, b"a"), (2, P.SUCCESS, b"b")]
    assert rows[0].seconds == rows[1].seconds


def test_the_concurrent_loop_maps_its_own_timeout_and_cancellation():
    host = _Host()

    async def one(exc: BaseException) -> list:
        with Run(host, [_item(1, 0)], cpu=False, timed_out=asyncio.TimeoutError,
                 cancelled=asyncio.CancelledError) as run:
            raise exc
        return run.rows()[0]

    timed_out = asyncio.run(one(asyncio.TimeoutError()))
    assert timed_out.status == P.TIMEOUT and timed_out.cpu is None  # CPU time of a shared thread is not told
    assert _fields(asyncio.run(one(asyncio.CancelledError())))[1:3] == [P.TERMINATED, None]
