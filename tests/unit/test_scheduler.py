"""The pure scheduler: events in, instructions out, time passed in. No processes, sockets or sleeps."""

import itertools

import pytest

from homeport.server.core.scheduler import (
    MAX_BLIND_STARTS,
    Assign,
    FailInputs,
    PoolConfig,
    RequeueInputs,
    Scheduler,
    StartContainer,
    StopContainer,
)


def make(config: PoolConfig = PoolConfig(), now: float = 0.0):
    ids = (f"c{i}" for i in itertools.count(1))
    s = Scheduler(lambda: next(ids))
    out = s.add_pool("p", config, now)
    return s, out


def of(kind, out):
    return [i for i in out if isinstance(i, kind)]


def started(out):
    return [i.container for i in of(StartContainer, out)]


def test_empty_pool_starts_nothing_but_min_containers_start_at_once():
    _, out = make()
    assert out == []
    _, out = make(PoolConfig(min_containers=3))
    assert started(out) == ["c1", "c2", "c3"]


def test_first_input_starts_one_container_and_is_assigned_when_it_is_ready():
    s, _ = make()
    out = s.submit("p", [1], now=0)
    assert started(out) == ["c1"] and not of(Assign, out)
    out = s.container_ready("c1", now=0.1)
    assert of(Assign, out) == [Assign("c1", (1,))]


def test_only_the_holder_of_an_input_holds_it():
    s, _ = make()
    s.submit("p", [1, 2], 0)
    s.container_ready("c1", 0.1)
    s.container_ready("c2", 0.1)
    holder = s.holder_of(1)
    other = "c2" if holder == "c1" else "c1"
    assert s.holds(holder, 1) and not s.holds(other, 1)
    assert not s.holds(holder, 99) and not s.holds("nope", 1)
    s.inputs_done(holder, [1], seconds=0.01, now=0.2)
    assert not s.holds(holder, 1)  # finished: nobody may answer for it again


def test_warm_container_is_reused():
    s, _ = make()
    s.submit("p", [1], 0)
    s.container_ready("c1", 0.1)
    s.inputs_done("c1", [1], seconds=0.01, now=0.2)
    out = s.submit("p", [2], 0.3)
    assert out == [Assign("c1", (2,))]


@pytest.mark.parametrize(
    ("queued", "config", "expected_starts"),
    [
        (1, PoolConfig(), 1),
        (5, PoolConfig(), 5),  # one input per container, nothing known about duration yet
        (100, PoolConfig(), MAX_BLIND_STARTS),  # at most this many blind starts at once
        (100, PoolConfig(max_containers=3), 3),
        (5, PoolConfig(buffer_containers=2), 7),
        (10, PoolConfig(max_inputs=4), 3),  # input concurrency: fewer containers
        (10, PoolConfig(max_inputs=10, target_inputs=2), 5),  # the autoscaler aims for target_inputs
        (0, PoolConfig(min_containers=2, buffer_containers=5), 2),  # buffer only while busy
    ],
)
def test_scale_up_table(queued, config, expected_starts):
    s, out = make(config)
    if queued:
        out = out + s.submit("p", range(queued), 0)
    assert len(started(out)) == expected_starts


def test_short_inputs_do_not_start_a_container_per_input():
    s, _ = make()
    s.submit("p", [0], 0)
    s.container_ready("c1", 0.1)
    s.inputs_done("c1", [0], seconds=0.0001, now=0.2)  # inputs take 100 µs
    out = s.submit("p", range(1, 1001), 0.3)
    assert started(out) == []  # 1000 × 100 µs drains on the warm container faster than a cold start
    assert sum(len(a.inputs) for a in of(Assign, out)) > 1  # and is prefetched in a batch


def test_long_inputs_scale_out_to_one_container_per_input():
    s, _ = make(PoolConfig(max_containers=10))
    s.submit("p", [0], 0)
    s.container_ready("c1", 0.1)
    s.inputs_done("c1", [0], seconds=1.0, now=1.1)
    out = s.submit("p", range(1, 101), 1.2)
    assert len(started(out)) == 9  # up to max_containers


def test_long_inputs_are_not_prefetched():
    s, _ = make()
    s.submit("p", [0], 0)
    s.container_ready("c1", 0.1)
    s.inputs_done("c1", [0], seconds=2.0, now=2.1)
    out = s.submit("p", [1, 2, 3], 2.2)
    assert of(Assign, out) == [Assign("c1", (1,))]


def test_idle_container_stops_after_scaledown_window_not_before():
    s, _ = make(PoolConfig(scaledown_window=10))
    s.submit("p", [1], 0)
    s.container_ready("c1", 0)
    s.inputs_done("c1", [1], 0.01, now=1)
    assert s.next_deadline() == 11
    assert s.tick(10.9) == []
    out = s.tick(11)
    assert of(StopContainer, out) == [StopContainer("c1", "idle 10.0s >= scaledown_window")]
    assert s.tick(20) == []  # asked once


def test_min_containers_are_never_scaled_down():
    s, _ = make(PoolConfig(min_containers=1, scaledown_window=2))
    s.container_ready("c1", 0)
    assert s.tick(1000) == []


def test_busy_container_is_not_scaled_down():
    s, _ = make(PoolConfig(scaledown_window=2))
    s.submit("p", [1], 0)
    s.container_ready("c1", 0)
    assert not of(StopContainer, s.tick(100))


def test_dead_container_fails_running_inputs_and_requeues_prefetched_ones():
    s, _ = make()
    s.submit("p", [0], 0)
    s.container_ready("c1", 0)
    s.inputs_done("c1", [0], seconds=0.00001, now=0.1)
    s.submit("p", [1, 2, 3], 0.2)  # short inputs: all three go to c1 (one running, two prefetched)
    assert s.holder_of(3) == "c1"
    out = s.container_exited("c1", 0.3, "killed by signal SIGKILL")
    assert of(FailInputs, out) == [FailInputs((1,), "killed by signal SIGKILL", lost=True)]
    assert of(RequeueInputs, out) == [RequeueInputs((2, 3))]
    assert started(out) == ["c2"]  # the requeued inputs get a fresh container
    out = s.container_ready("c2", 0.5)
    assert of(Assign, out)[0].inputs[0] == 2  # in their original order


def test_init_failure_fails_the_queue_instead_of_restarting_forever():
    s, _ = make()
    s.submit("p", [1, 2], 0)
    out = s.container_exited("c1", 0.1, "enter hook failed", init_failed=True)
    fails = of(FailInputs, out)
    assert {i for f in fails for i in f.inputs} == {1, 2}
    assert not started(out)


def test_release_puts_unstarted_inputs_back_in_front():
    s, _ = make(PoolConfig(max_containers=1))
    s.submit("p", [0], 0)
    s.container_ready("c1", 0)
    s.inputs_done("c1", [0], seconds=0.00001, now=0.1)
    s.submit("p", [1, 2, 3], 0.2)
    s.submit("p", [4], 0.2)
    out = s.release("c1", [2, 3], now=0.3)
    assert of(Assign, out) and of(Assign, out)[0].inputs[:2] == (2, 3)


def test_remove_pool_fails_queued_and_stops_everything():
    s, _ = make(PoolConfig(max_containers=1))
    s.submit("p", [1, 2], 0)
    s.container_ready("c1", 0)
    out = s.remove_pool("p", "app stopped")
    assert of(FailInputs, out) == [FailInputs((2,), "app stopped")]
    assert of(StopContainer, out) == [StopContainer("c1", "app stopped")]
    out = s.container_exited("c1", 1, "stopped")
    assert "p" not in s.pools


def test_cancel_only_drops_queued_inputs():
    s, _ = make(PoolConfig(max_containers=1))
    s.submit("p", [1, 2], 0)
    s.container_ready("c1", 0)
    assert s.cancel("p", {2}) is True  # still queued
    assert s.cancel("p", {1}) is False  # already running on c1


def test_stop_container_is_idempotent():
    s, _ = make(PoolConfig(min_containers=1))
    assert s.stop_container("c1", "user asked") == [StopContainer("c1", "user asked")]
    assert s.stop_container("c1", "user asked") == []


def test_a_leaving_container_gets_nothing_more_and_what_it_never_saw_is_requeued():
    s, _ = make(PoolConfig(max_containers=2))
    s.submit("p", [0], 0)
    s.container_ready("c1", 0)
    s.inputs_done("c1", [0], seconds=0.00001, now=0.1)
    s.submit("p", [1, 2, 3], 0.2)  # all prefetched to c1
    out = s.release("c1", [2], now=1.0, leaving=True)  # 1 timed out (its output came separately), 3 in flight
    assert not [a for a in of(Assign, out) if a.container == "c1"]
    s.inputs_done("c1", [1], seconds=1.0, now=1.0)
    out = s.container_exited("c1", 1.1, "exited with code 0")
    assert not of(FailInputs, out)
    assert of(RequeueInputs, out) == [RequeueInputs((3,))]


def test_requests_wait_for_capacity_and_idle_containers_of_other_pools_make_room():
    from homeport.server.core.scheduler import Capacity

    ids = (f"c{i}" for i in itertools.count(1))
    s = Scheduler(lambda: next(ids), Capacity(cpu=2, memory_mib=10_000))
    s.add_pool("a", PoolConfig(cpu=1.0, min_containers=1), 0)
    s.add_pool("b", PoolConfig(cpu=1.0), 0)
    s.submit("b", [1], 0)  # c2 for b
    s.container_ready("c1", 0)
    s.container_ready("c2", 0)
    s.inputs_done("c2", [1], seconds=5.0, now=5)  # b's container is now idle
    s.add_pool("x", PoolConfig(cpu=1.5), 6)
    out = s.submit("x", [7], 6)
    assert not started(out)  # 2 cores used: x waits ...
    assert of(StopContainer, out) == [StopContainer("c2", "idle; stopped to make room for a container of x")]
    assert s.pools["x"].pending == 1  # ... visible as pending; a's min_containers one is kept
    assert s.submit("x", [8], 6.1) == []  # nothing more is stopped while c2 is on its way out
    out = s.container_exited("c2", 6.5, "stopped")
    assert not started(out)  # 1 + 1.5 > 2 still: a's container stays (min_containers)
    s.remove_pool("a", "app stopped")
    out = s.container_exited("c1", 7, "stopped")
    assert started(out) == ["c3"]


def test_a_request_larger_than_the_machine_fails_at_once():
    from homeport.server.core.scheduler import Capacity

    s = Scheduler(lambda: "c1", Capacity(cpu=2, memory_mib=1024))
    s.add_pool("p", PoolConfig(memory_mib=4096), 0)
    out = s.submit("p", [1], 0)
    assert out == [FailInputs((1,), "No container can start: it requests memory=4096 MiB but this machine offers 1024 MiB; lower `memory`.")]



def test_cpu_bound_inputs_get_no_more_containers_than_cores():
    from homeport.server.core.scheduler import Capacity

    def scale_for(cpu_seconds):
        ids = (f"c{i}" for i in itertools.count(1))
        s = Scheduler(lambda: next(ids), Capacity(cpu=2, memory_mib=100_000))
        s.add_pool("p", PoolConfig(), 0)
        s.submit("p", [0], 0)
        s.container_ready("c1", 0.1)
        s.inputs_done("c1", [0], seconds=0.05, now=0.2, cpu_seconds=cpu_seconds)
        out = s.submit("p", range(1, 1001), 0.3)  # 1000 x 50 ms: a plan of 100 containers by time
        return 1 + len(started(out))

    assert scale_for(cpu_seconds=0.049) == 2  # computing: as many containers as cores
    assert scale_for(cpu_seconds=0.001) > 2  # waiting (sleeps, I/O): scale out
