"""Input concurrency and dynamic batching with real containers."""

import asyncio
import warnings

import modal
import pytest

from homeport.exception import FunctionTimeoutError, InvalidError
from homeport.testing import app_fixture

pytestmark = pytest.mark.integration


conc = app_fixture("concurrency")


def test_async_inputs_overlap_on_one_container(conc):
    out = list(conc.async_sleep.map([1.0] * 20))
    assert len({pid for pid, _ in out}) == 1  # max_containers=1: all twenty ran on one container...
    assert max(peak for _, peak in out) > 1  # ...more than one at a time


def test_sync_inputs_run_in_threads(conc):
    out = list(conc.sync_sleep.map([0.5] * 8))
    assert len({pid for pid, _ in out}) == 1
    assert len({thread for _, thread in out}) > 1  # more than one worker thread served them


def test_async_timeout_fails_that_input_only(conc):
    out = list(conc.async_maybe_hang.map([0.01, 5, 0.01], return_exceptions=True))
    assert isinstance(out[1], FunctionTimeoutError)
    assert isinstance(out[0], int) and out[0] == out[2]


def test_sync_timeout_replaces_the_container_and_loses_nothing(conc):
    out = list(conc.sync_maybe_hang.map([0.01, 30, 0.5, 0.5, 0.5, 0.5], return_exceptions=True))
    assert isinstance(out[1], FunctionTimeoutError)
    assert all(isinstance(x, int) for i, x in enumerate(out) if i != 1), out  # every other input got its result
    # The function still works, on a new container: the one that timed out left (a stuck thread
    # cannot be stopped, so it does not serve anything again).
    assert conc.sync_maybe_hang.remote(0) != out[0]


def test_async_generator_with_concurrency(conc):
    assert list(conc.async_gen.remote_gen(5)) == [0, 1, 2, 3, 4]


def test_class_concurrency_shares_one_enter(conc):
    async def main():
        obj = conc.Counter()
        return await asyncio.gather(*(obj.wait.remote.aio(0.5) for _ in range(10)))

    out = asyncio.run(main())
    assert len({pid for pid, _ in out}) == 1
    assert {enters for _, enters in out} == {1}


def test_batched_function_receives_lists(conc):
    out = list(conc.batch_add.map(range(16), range(16)))
    assert [x for _, _, x in out] == [2 * i for i in range(16)]
    assert max(n for _, n, _ in out) > 1  # inputs really arrived in batches
    assert conc.batch_add.remote(2, ys=3)[2] == 5  # a single call still works


def test_batched_wrong_output_length_fails_every_input_of_the_batch(conc):
    with pytest.raises(InvalidError, match="equal length"):
        conc.batch_wrong_length.remote(1)


def test_batched_method(conc):
    out = list(conc.Embedder().embed.map(["a", "b", "c"]))
    assert [o.split(":")[0] for o in out] == ["a", "b", "c"]


def test_with_concurrency_variant(conc):
    variant = conc.Counter.with_concurrency(max_inputs=2)
    pid, _ = variant().wait.remote(0)
    base_pid, _ = conc.Counter().wait.remote(0)
    assert pid != base_pid  # a variant gets its own containers


def test_definition_errors():
    with pytest.raises(InvalidError, match="cannot be greater than `max_inputs`"):
        modal.concurrent(max_inputs=2, target_inputs=3)
    with pytest.raises(TypeError, match="missing required argument: `max_inputs`"):
        modal.concurrent(target_inputs=3)
    with pytest.raises(InvalidError, match="cannot be greater than 1000"):
        modal.batched(max_batch_size=1001, wait_ms=1)
    with pytest.raises(InvalidError, match="does not accept default arguments"):
        modal.batched(max_batch_size=2, wait_ms=1)(lambda x=1: x)
    with pytest.raises(InvalidError, match="cannot be used on methods"):
        app = modal.App()

        @app.cls()
        class C:
            @modal.concurrent(max_inputs=2)
            @modal.method()
            def m(self):
                pass
    app = modal.App()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")

        @app.function(allow_concurrent_inputs=5, serialized=True)
        def legacy():
            pass
    assert any("allow_concurrent_inputs" in str(x.message) for x in w)
