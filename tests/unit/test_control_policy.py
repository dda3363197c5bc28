"""The control plane's policy in the pure core (retry timing, variant identity, web request ids, pool
settings), and the executor's routing of the scheduler's assignments. No processes or sockets."""

import itertools
from types import SimpleNamespace

import pytest

from homeport import _protocol as P
from homeport._retries import Retries
from homeport.server.core.policy import InputIds, pool_config, retry_after, variant_key, variant_pool_config
from homeport.server.core.scheduler import Assign, PoolConfig, Scheduler
from homeport.server.executor import Executor
from homeport.server.records import CallRecord, ContainerRecord, FunctionRecord, InputRecord, Registry

# --- retries --------------------------------------------------------------------------------------


def test_no_policy_never_retries():
    assert retry_after(None, P.KIND_UNARY, 0) is None
    assert retry_after({}, P.KIND_UNARY, 0) is None


def test_retries_back_off_exponentially_until_used_up():
    policy = Retries(max_retries=3, backoff_coefficient=2.0, initial_delay=1.0, max_delay=3.0).to_dict()
    assert [retry_after(policy, P.KIND_MAP, attempt) for attempt in range(4)] == [1.0, 2.0, 3.0, None]


def test_generator_calls_are_not_retried():
    policy = Retries(max_retries=3).to_dict()
    assert retry_after(policy, P.KIND_GENERATOR, 0) is None
    assert retry_after(policy, P.KIND_SPAWN, 0) is not None


# --- variants -------------------------------------------------------------------------------------


def test_variant_key_ignores_the_order_the_client_sent():
    a = variant_key("fu-1", {"params": {"x": 1, "y": {"b": 2, "a": 1}}, "config": {"cpu": 1, "gpu": "T4"}})
    b = variant_key("fu-1", {"config": {"gpu": "T4", "cpu": 1}, "params": {"y": {"a": 1, "b": 2}, "x": 1}})
    assert a == b


def test_variant_key_tells_values_and_functions_apart():
    base = variant_key("fu-1", {"params": {"x": 1}})
    assert variant_key("fu-1", {"params": {"x": 2}}) != base
    assert variant_key("fu-2", {"params": {"x": 1}}) != base
    assert variant_key("fu-1", {"params": {"x": 1}, "definition": {"timeout": 5}}) != base
    # Absent and empty are the same request.
    assert variant_key("fu-1", {"params": {"x": 1}, "config": None}) == base


# --- input ids ------------------------------------------------------------------------------------


def test_web_requests_are_known_by_their_id():
    ids = InputIds()
    drawn = [ids.function_input(), ids.web_request(), ids.function_input(), ids.web_request(), ids.web_request()]
    assert len(set(drawn)) == len(drawn)
    assert [InputIds.is_web(i) for i in drawn] == [False, True, False, True, True]


# --- pools ----------------------------------------------------------------------------------------
def _definition(**fields) -> dict:
    """A function's definition as the SDK sends it (`_protocol.definition.FunctionDefinition`)."""
    return {"tag": "f", "module_name": "app", **fields}



def test_pool_config_of_a_web_function_has_no_input_deadline_and_no_prefetch():
    cfg = pool_config({"max_containers": 3}, _definition(web=[{"name": None}], timeout=30))
    assert cfg.timeout is None and cfg.prefetch is False and cfg.max_containers == 3
    assert cfg.startup_timeout == 30
    plain = pool_config({}, _definition(timeout=30))
    assert plain.timeout == 30 and plain.prefetch is True


def test_pool_config_batch_waits_for_the_batch_and_the_one_before():
    assert pool_config({}, _definition(batch={"max_batch_size": 4, "wait_ms": 500}, timeout=10)).batch_wait == pytest.approx(10.5)


def test_variant_pool_keeps_the_base_settings_with_its_overrides():
    base = PoolConfig(min_containers=0, max_containers=4, unbound=True, timeout=1.0)
    cfg = variant_pool_config(base, {"min_containers": 2}, _definition(timeout=7))
    assert (cfg.min_containers, cfg.max_containers, cfg.unbound, cfg.timeout) == (2, 4, False, 7)


# --- the executor ---------------------------------------------------------------------------------


class _Proto:
    def __init__(self):
        self.sent = []

    def send(self, msg):
        self.sent.append(msg)


class _Web:
    def __init__(self):
        self.assigned_ids = []

    def assigned(self, cid, iid):
        self.assigned_ids.append((cid, iid))


def _executor():
    ids = (f"ta-{i}" for i in itertools.count(1))
    registry = Registry()
    effects = SimpleNamespace(web=_Web(), supervisor=None, started=[])
    effects.start_container = effects.started.append
    effects.fail_inputs = lambda ins: None
    ex = Executor(Scheduler(lambda: next(ids)), registry, backend=None, spawn=None, effects=effects)
    fn = FunctionRecord("fu-1", "ap-1", "f", {}, PoolConfig(max_containers=1), {}, None, False)
    registry.functions["fu-1"] = fn
    ex.add_pool("fu-1", fn.config, now=0.0)
    return ex, registry, effects, fn


def test_assignments_route_web_requests_to_the_gateway_and_inputs_to_the_container():
    ex, registry, effects, fn = _executor()
    call = CallRecord("fc-1", fn, P.KIND_UNARY, None)
    iid = ex.input_ids.function_input()
    registry.inputs[iid] = InputRecord(iid, call, 0, b"args", None)
    web_iid = ex.input_ids.web_request()
    ex.submit("fu-1", [iid])
    (start,) = effects.started
    rec = ContainerRecord(start.container, fn, "token", 0.0, proto=_Proto())
    registry.containers[start.container] = rec
    ex.container_connected(start.container)
    ex.container_ready(start.container, now=1.0)
    assert rec.proto.sent == [P.Inputs(items=[P.InputRow(iid, b"args", None, "fc-1")])]
    ex.execute([Assign(start.container, [web_iid])])
    assert effects.web.assigned_ids == [(start.container, web_iid)]
    assert len(rec.proto.sent) == 1  # the web request is not sent to the container as an input


def test_a_queued_chunk_counts_each_input_it_has_left():
    """The scheduler queues a map's chunk as one; what the dashboard and `status` call queued counts
    each input the chunk still has to run, a single input and a web request as one each."""
    ex, registry, _effects, fn = _executor()
    call = CallRecord("fc-1", fn, P.KIND_MAP, None)
    single, chunk, partly_done = (ex.input_ids.function_input() for _ in range(3))
    registry.inputs[single] = InputRecord(single, call, 0, b"args", None)
    registry.inputs[chunk] = InputRecord(chunk, call, 1, [b"a"] * 5, None)
    registry.inputs[partly_done] = InputRecord(partly_done, call, 6, [b"a"] * 5, None, left={3, 4})
    web_request = ex.input_ids.web_request()
    assert registry.queued_inputs([single, chunk, partly_done, web_request]) == 1 + 5 + 2 + 1
    assert registry.queued_inputs([]) == 0
