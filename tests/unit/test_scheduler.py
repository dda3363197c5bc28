"""The pure scheduler: events in, instructions out, time passed in. No processes, sockets or sleeps."""

import itertools

import pytest

from homeport.server.core.scheduler import (
    DEADLINE_GRACE_SECONDS,
    INPUT_CRASH_LIMIT,
    MAX_BLIND_STARTS,
    POOL_CRASH_LIMIT,
    Assign,
    FailInputs,
    InputsTimedOut,
    PoolConfig,
    RequeueInputs,
    RestartBackoff,
    Scheduler,
    StartContainer,
    StartupTimedOut,
    StopContainer,
    restart_backoff,
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


def test_concurrent_blocking_callers_scale_out_where_the_same_backlog_as_a_map_would_not():
    for callers, expected in ((False, []), (True, ["c2", "c3", "c4"])):
        s, _ = make(PoolConfig(max_containers=4))
        s.submit("p", [0], 0)
        s.container_ready("c1", 0.1)
        s.inputs_done("c1", [0], seconds=0.0001, now=0.2)  # inputs take 100 µs
        # 200 threads each blocked on its own `.remote()`: the backlog drains in 20 ms on one container,
        # but every caller waits for all the calls ahead of it.
        out = s.submit("p", range(1, 201), 0.3, callers=callers)
        assert started(out) == expected  # up to max_containers


def test_cpu_bound_callers_get_no_more_containers_than_cores_and_their_containers_scale_down():
    from homeport.server.core.scheduler import Capacity

    ids = (f"c{i}" for i in itertools.count(1))
    s = Scheduler(lambda: next(ids), Capacity(cpu=2, memory_mib=100_000))
    s.add_pool("p", PoolConfig(scaledown_window=2), 0)
    s.submit("p", [0], 0, callers=True)
    s.container_ready("c1", 0.1)
    s.inputs_done("c1", [0], seconds=0.0001, now=0.2, cpu_seconds=0.0001)  # all cpu
    out = s.submit("p", range(1, 201), 0.3, callers=True)
    assert started(out) == ["c2"]  # two cores
    s.container_ready("c2", 0.4)
    while s.pools["p"].queue or any(s.holder_of(i) for i in range(1, 201)):  # each answers what it holds
        for c in ("c1", "c2"):
            held = [i for i in range(1, 201) if s.holds(c, i)]
            s.inputs_done(c, held, seconds=0.0001 * len(held), now=0.6, cpu_seconds=0.0001 * len(held))
    assert not s.pools["p"].callers  # answered: no caller waits any more
    assert sorted(x.container for x in of(StopContainer, s.tick(2.6))) == ["c1", "c2"]  # idle past the window


def test_a_caller_whose_input_failed_counts_no_more():
    s, _ = make(PoolConfig(timeout=10, max_containers=4))
    s.submit("p", [1], 0, callers=True)
    s.container_ready("c1", 0)
    s.tick(10 + DEADLINE_GRACE_SECONDS)  # timed out
    assert not s.pools["p"].callers
    s.submit("p", [2, 3], 20, callers=True)
    assert s.cancel("p", {2, 3}) and not s.pools["p"].callers


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


def test_crashed_container_reruns_running_and_prefetched_inputs_on_a_fresh_one():
    s, _ = make()
    s.submit("p", [0], 0)
    s.container_ready("c1", 0)
    s.inputs_done("c1", [0], seconds=0.00001, now=0.1)
    s.submit("p", [1, 2, 3], 0.2)  # short inputs: all three go to c1 (one running, two prefetched)
    assert s.holder_of(3) == "c1"
    out = s.container_exited("c1", 0.3, "killed by signal SIGKILL", crashed=True)
    assert not of(FailInputs, out)
    assert of(RequeueInputs, out) == [RequeueInputs((1, 2, 3))]
    assert not of(RestartBackoff, out)  # it was ready: no start-up backoff
    assert started(out) == ["c2"]  # the requeued inputs get a fresh container
    out = s.container_ready("c2", 0.5)
    assert of(Assign, out)[0].inputs[:3] == (1, 2, 3)  # in their original order, first in line


def test_an_input_that_crashes_every_container_fails_past_the_crash_limit():
    s, _ = make(PoolConfig(fail_on_crashes=False))
    s.submit("p", [1], 0)
    now = 0.0
    for k in range(INPUT_CRASH_LIMIT + 1):
        cid = f"c{k + 1}"
        assert s.holder_of(1) is None
        s.container_ready(cid, now)
        assert s.holder_of(1) == cid
        now += 1
        out = s.container_exited(cid, now, "killed by signal SIGSEGV", crashed=True)
        if k < INPUT_CRASH_LIMIT:
            assert not of(FailInputs, out) and of(RequeueInputs, out) == [RequeueInputs((1,))]
        else:
            [fail] = of(FailInputs, out)
            assert fail.inputs == (1,) and fail.lost and "SIGSEGV" in fail.reason
            assert not of(RequeueInputs, out)
    assert 1 not in s.pools["p"].input_crashes


def test_a_crash_at_start_up_fails_nothing_while_others_start():
    # 1,000 queued inputs, 3 containers starting, one SIGKILLed: its crash fails none of the inputs.
    s, out = make(PoolConfig(max_containers=3))
    out = s.submit("p", range(1000), 0)
    assert started(out) == ["c1", "c2", "c3"]
    out = s.container_exited("c2", 0.5, "killed by signal SIGKILL", crashed=True)
    assert not of(FailInputs, out)
    assert of(RestartBackoff, out) == [RestartBackoff("p", "c2", 1, 1.0)]  # a start-up crash backs off
    assert len(s.pools["p"].queue) == 1000
    assert started(s.tick(1.5)) == ["c4"]  # replaced after the backoff
    for cid in ("c1", "c3", "c4"):
        s.container_ready(cid, 2.0)
        assert s.containers[cid].assigned


def _crash(s, cid, now):
    return s.container_exited(cid, now, "killed by signal SIGKILL", crashed=True)


def test_an_ephemeral_pool_fails_its_queue_after_crashes_in_a_row():
    s, _ = make(PoolConfig(max_containers=1))
    s.submit("p", [1, 2], 0)
    fails = []
    now = 0.0
    for k in range(POOL_CRASH_LIMIT):
        out = _crash(s, f"c{k + 1}", now)
        fails += of(FailInputs, out)
        now = s.next_deadline() or now + 100
        s.tick(now)
    assert [f.inputs for f in fails] == [(1, 2)]  # only the last crash failed the queue
    assert f"{POOL_CRASH_LIMIT} containers crashed in a row" in fails[0].reason


def test_crashes_separated_by_completed_inputs_never_fail_the_queue():
    s, _ = make(PoolConfig(max_containers=1))
    s.submit("p", range(100), 0)
    now = 0.0
    for k in range(1, 3 * POOL_CRASH_LIMIT):
        cid = f"c{k}"
        s.container_ready(cid, now)
        first = next(iter(s.containers[cid].assigned))
        s.inputs_done(cid, [first], seconds=0.1, now=now + 0.1)  # one input completes ...
        out = _crash(s, cid, now + 0.2)  # ... then the container crashes
        assert not of(FailInputs, out)
        assert started(out) == [f"c{k + 1}"]  # replaced at once: it had started fine
        now += 1
    assert len(s.pools["p"].queue) == 100 - (3 * POOL_CRASH_LIMIT - 1)


def test_a_deployed_pool_never_fails_its_queue_for_crashes_and_backs_off():
    s, _ = make(PoolConfig(fail_on_crashes=False, max_containers=1))
    s.submit("p", [1, 2], 0)
    now = 0.0
    delays = []
    for k in range(10):
        out = _crash(s, f"c{k + 1}", now)
        assert not of(FailInputs, out)
        delays += [b.delay for b in of(RestartBackoff, out)]
        now = s.next_deadline()
        assert started(s.tick(now)) == [f"c{k + 2}"]
    assert delays == [restart_backoff(n) for n in range(1, 11)]
    assert list(s.pools["p"].queue) == [1, 2]
    s.container_ready("c11", now)  # it finally starts: the queue runs
    assert s.holder_of(1) == "c11"


def test_a_reported_start_up_failure_still_fails_the_queue_in_a_deployed_pool():
    s, _ = make(PoolConfig(fail_on_crashes=False))
    s.submit("p", [1], 0)
    out = s.container_exited("c1", 0.1, "ImportError", init_failed=True)
    assert of(FailInputs, out) == [FailInputs((1,), "ImportError")]


def test_a_container_that_leaves_after_a_timeout_is_no_crash():
    s, _ = make(PoolConfig(max_containers=1))
    s.submit("p", range(10), 0)
    now = 0.0
    for k in range(POOL_CRASH_LIMIT + 1):
        cid = f"c{k + 1}"
        s.container_ready(cid, now)
        held = list(s.containers[cid].assigned)
        s.release(cid, held[1:], now, leaving=True)  # it timed out its first input and leaves
        out = s.container_exited(cid, now + 0.1, "exited with code 0", crashed=True)
        assert not of(FailInputs, out)
        now += 1
    assert s.pools["p"].crashes == 0


def test_a_stopped_app_fails_what_its_dead_containers_held():
    s, _ = make()
    s.submit("p", [1], 0)
    s.container_ready("c1", 0)
    s.remove_pool("p", "app stopped")
    out = s.container_exited("c1", 1, "stopped")
    assert of(FailInputs, out) == [FailInputs((1,), "stopped", lost=True)]


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


# --- restart backoff after start-up failures --------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0), (6, 32.0), (7, 60.0), (8, 60.0), (10_000, 60.0)],
)
def test_restart_backoff_table(failures, delay):
    assert restart_backoff(failures) == delay


def test_a_crash_looping_min_containers_pool_backs_off_and_a_ready_container_resets_it():
    s, out = make(PoolConfig(min_containers=1))
    assert started(out) == ["c1"]
    # (event, time, what it answers): failures space the restarts 1 s, 2 s, 4 s apart
    steps = [
        ("fail", "c1", 0.0, [RestartBackoff("p", "c1", 1, 1.0)], []),
        ("tick", None, 0.99, [], []),
        ("tick", None, 1.0, [], ["c2"]),
        ("fail", "c2", 1.5, [RestartBackoff("p", "c2", 2, 2.0)], []),
        ("tick", None, 3.4, [], []),
        ("tick", None, 3.5, [], ["c3"]),
        ("fail", "c3", 4.0, [RestartBackoff("p", "c3", 3, 4.0)], []),
        ("tick", None, 7.9, [], []),
        ("tick", None, 8.0, [], ["c4"]),
        ("ready", "c4", 9.0, [], []),  # a container that gets ready resets the backoff
    ]
    reasons = []
    for kind, cid, now, backoffs, starts in steps:
        if kind == "fail":
            out = s.container_exited(cid, now, "enter hook failed", init_failed=True)
            assert s.next_deadline() == now + backoffs[0].delay
        elif kind == "ready":
            out = s.container_ready(cid, now)
        else:
            out = s.tick(now)
        assert of(RestartBackoff, out) == backoffs, (kind, cid, now)
        assert started(out) == starts, (kind, cid, now)
        reasons += [i.reason for i in of(StartContainer, out)]
    assert [r.split("; ")[-1] for r in reasons] == [f"restart after {n} start-up failure(s) in a row" for n in (1, 2, 3)]
    s.stop_container("c4", "test")
    out = s.container_exited("c4", 10.0, "stopped")  # a normal exit is not a start-up failure
    assert started(out) == ["c5"] and not of(RestartBackoff, out)
    out = s.container_exited("c5", 10.5, "enter hook failed", init_failed=True)
    assert of(RestartBackoff, out) == [RestartBackoff("p", "c5", 1, 1.0)]  # counting starts again


def test_inputs_that_arrive_during_the_backoff_wait_for_the_next_start():
    s, _ = make()
    s.submit("p", [1], 0)
    out = s.container_exited("c1", 0.2, "enter hook failed", init_failed=True)
    assert {i for f in of(FailInputs, out) for i in f.inputs} == {1}  # what waited gets the error at once
    out = s.submit("p", [2], 0.5)
    assert not started(out) and s.next_deadline() == 1.2  # ... and the next start waits for the backoff
    out = s.tick(1.2)
    assert started(out) == ["c2"] and "restart after 1 start-up failure(s)" in of(StartContainer, out)[0].reason
    assert of(Assign, s.container_ready("c2", 1.5)) == [Assign("c2", (2,))]


# --- control-plane deadlines: input timeout and start-up timeout -----------------------------------


def test_an_input_past_its_timeout_and_the_grace_is_timed_out_and_its_container_replaced():
    s, _ = make(PoolConfig(timeout=10, max_containers=1))
    s.submit("p", [1, 2], 0)
    s.container_ready("c1", 0)  # input 1 runs from t=0; 2 waits in the queue
    deadline = 10 + DEADLINE_GRACE_SECONDS
    assert s.next_deadline() == deadline
    assert s.tick(deadline - 0.01) == []
    out = s.tick(deadline)
    assert of(InputsTimedOut, out) == [InputsTimedOut("c1", (1,), 10)]
    assert started(out) == ["c2"]  # a replacement, although c1 has not exited yet
    assert not s.holds("c1", 1)  # a late output from c1 is stale
    assert s.inputs_done("c1", [1], seconds=12, now=deadline + 0.1) == []
    assert s.tick(deadline + 5) == []  # timed out once
    assert of(Assign, s.container_ready("c2", 13)) == [Assign("c2", (2,))]
    out = s.container_exited("c1", 13, "killed by signal SIGKILL")
    assert not of(FailInputs, out) and not of(RequeueInputs, out)  # nothing of it left to fail


def test_a_prefetched_input_is_timed_from_the_output_before_it():
    s, _ = make(PoolConfig(timeout=10))
    s.submit("p", [0], 0)
    s.container_ready("c1", 0)
    s.inputs_done("c1", [0], seconds=0.00001, now=0.1)  # short inputs: the next ones are prefetched
    s.submit("p", [1, 2], 1)
    assert s.holder_of(1) == s.holder_of(2) == "c1"
    s.inputs_done("c1", [1], seconds=8, now=9)  # 2 starts when 1 ends, not when it was sent
    assert s.tick(1 + 10 + DEADLINE_GRACE_SECONDS) == []
    out = s.tick(9 + 10 + DEADLINE_GRACE_SECONDS)
    assert of(InputsTimedOut, out) == [InputsTimedOut("c1", (2,), 10)]


def test_a_timed_out_concurrent_container_requeues_the_other_inputs_it_held():
    s, _ = make(PoolConfig(timeout=10, max_inputs=2, max_containers=1))
    s.submit("p", [1, 2, 3], 0)
    s.container_ready("c1", 0)  # 1 and 2 run; 3 waits
    s.inputs_done("c1", [1], seconds=5, now=5)  # 3 starts at 5
    out = s.tick(10 + DEADLINE_GRACE_SECONDS)
    assert of(InputsTimedOut, out) == [InputsTimedOut("c1", (2,), 10)]
    assert of(RequeueInputs, out) == [RequeueInputs((3,))]  # run again elsewhere, not lost
    assert started(out) == ["c2"]
    assert of(Assign, s.container_ready("c2", 12)) == [Assign("c2", (3,))]


def test_a_batch_may_start_its_wait_later():
    s, _ = make(PoolConfig(timeout=10, batch_wait=3, max_inputs=4))
    s.submit("p", [1], 0)
    s.container_ready("c1", 0)
    assert s.tick(10 + DEADLINE_GRACE_SECONDS) == []
    assert of(InputsTimedOut, s.tick(13 + DEADLINE_GRACE_SECONDS)) == [InputsTimedOut("c1", (1,), 10)]


def test_a_container_not_ready_within_startup_timeout_after_its_hello_is_timed_out():
    s, _ = make(PoolConfig(startup_timeout=5, min_containers=1))
    assert s.tick(100) == []  # no deadline before the runtime said hello (the process may still start)
    s.container_connected("c1", 100)
    deadline = 105 + DEADLINE_GRACE_SECONDS
    assert s.next_deadline() == deadline
    assert s.tick(deadline - 0.01) == []
    out = s.tick(deadline)
    # a start-up failure: the pool backs off at once, with no replacement until the backoff ends
    assert out == [StartupTimedOut("c1", 5), RestartBackoff("p", "c1", 1, 1.0)]
    out = s.container_exited("c1", deadline + 0.1, "killed", init_failed=True)
    assert out == []  # counted once
    assert started(s.tick(deadline + 1)) == ["c2"]


def test_no_timeout_no_deadline():
    s, _ = make(PoolConfig())
    s.submit("p", [1], 0)
    s.container_ready("c1", 0)
    assert s.next_deadline() is None
    assert s.tick(10**6) == []


# --- class pools without parameter values ----------------------------------------------------------


def test_an_unbound_class_pool_never_starts_containers():
    s, out = make(PoolConfig(min_containers=2, buffer_containers=1, unbound=True))
    assert out == []
    assert s.tick(100) == []
    out = s.submit("p", [1], 0)
    assert not started(out)
    assert [f.inputs for f in of(FailInputs, out)] == [(1,)]
    assert "required parameters" in of(FailInputs, out)[0].reason


def test_an_idle_min_container_sets_no_scale_down_deadline():
    s, _ = make(PoolConfig(min_containers=1, scaledown_window=2))
    s.container_ready("c1", 0)
    assert s.next_deadline() is None  # it is kept: nothing to wake the ticker for


def test_a_tick_that_skips_the_deadline_scan_still_times_out_inputs_that_started_after_it():
    # A tick notes the earliest deadline and does not scan again before it (so that thousands of
    # containers cost no scan per tick); inputs that start later must still be timed out on time.
    s, _ = make(PoolConfig(timeout=10, max_containers=1))
    s.submit("p", [1], 0)
    s.container_ready("c1", 0)
    assert s.tick(1) == []  # scans: input 1 is due at 11.5
    s.inputs_done("c1", [1], seconds=1, now=2)
    s.submit("p", [2], 5)  # runs from 5: due at 16.5
    assert s.tick(11.6) == []  # past the noted deadline: scans again, nothing late
    assert s.tick(16.4) == []
    assert of(InputsTimedOut, s.tick(5 + 10 + DEADLINE_GRACE_SECONDS)) == [InputsTimedOut("c1", (2,), 10)]


def test_only_containers_with_room_take_inputs_and_the_backlog_is_spread_as_before():
    s, _ = make(PoolConfig(max_containers=3))
    s.submit("p", [1, 2, 3], 0)
    for c in ("c1", "c2", "c3"):
        s.container_ready(c, 0)
    s.inputs_done("c1", [1], seconds=0.001, now=0.1)  # short inputs: a window of 3 per container
    s.submit("p", list(range(10, 16)), 0.2)
    # c1 (empty) takes its share of the backlog over the three ready containers, c2 and c3 the rest
    holders = [s.holder_of(i) for i in range(10, 16)]
    assert holders.count("c1") == 2 and holders.count("c2") == holders.count("c3") == 2


def test_capacity_that_grows_starts_the_containers_waiting_for_room():
    """A cluster's capacity changes as nodes join (the Ray backend's `capacity()`, set by the executor)."""
    from homeport.server.core.scheduler import Capacity

    ids = (f"c{i}" for i in itertools.count(1))
    s = Scheduler(lambda: next(ids), Capacity(cpu=2, memory_mib=100_000))
    s.add_pool("p", PoolConfig(cpu=1.0, max_containers=10), 0)
    out = s.submit("p", range(8), 0)
    assert started(out) == ["c1", "c2"] and s.pools["p"].pending > 0  # this machine's two cores
    assert s.set_capacity(Capacity(cpu=2, memory_mib=100_000), 1) == []  # unchanged: nothing new
    out = s.set_capacity(Capacity(cpu=6, memory_mib=100_000), 1)  # four more cores joined
    assert started(out) == ["c3", "c4", "c5", "c6"]
    assert s.set_capacity(Capacity(cpu=3, memory_mib=100_000), 2) == []  # a node left: none is stopped
    assert len(s.containers) == 6


def test_a_chunk_that_reports_some_of_its_inputs_is_timed_from_that_report():
    """A map's chunk runs its inputs one after another: each has the whole `timeout`, counted from the
    report of the ones before it (`restart_clock`)."""
    s, _ = make(PoolConfig(timeout=10, max_containers=1))
    s.submit("p", [1], 0)
    s.container_ready("c1", 0)
    s.restart_clock("c1", 1, 8)  # its first inputs came back at 8: the next one runs from there
    assert s.tick(10 + DEADLINE_GRACE_SECONDS) == []
    assert s.next_deadline() == 18 + DEADLINE_GRACE_SECONDS
    assert of(InputsTimedOut, s.tick(18 + DEADLINE_GRACE_SECONDS)) == [InputsTimedOut("c1", (1,), 10)]
    s.restart_clock("c1", 1, 30)  # no longer held: nothing to restart
    assert not s.holds("c1", 1)


def test_a_chunk_that_got_on_between_crashes_is_not_a_poison_input():
    s, _ = make(PoolConfig(fail_on_crashes=False))
    s.submit("p", [1], 0)
    now = 0.0
    for k in range(INPUT_CRASH_LIMIT + 2):
        cid = f"c{k + 1}"
        s.container_ready(cid, now)
        assert s.holder_of(1) == cid
        now += 1
        s.restart_clock(cid, 1, now)  # some of its inputs were done in this container
        out = s.container_exited(cid, now, "killed by signal SIGKILL", crashed=True)
        assert not of(FailInputs, out) and of(RequeueInputs, out) == [RequeueInputs((1,))]
