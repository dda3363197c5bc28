"""Best-effort session affinity (`Modal-Session-ID`): the gateway reads the header, the control plane
picks a replica by rendezvous hashing and gives it the request when it has a free slot."""

import itertools

from homeport.server.core.scheduler import Assign, PoolConfig, Scheduler
from homeport.server.gateway._exchange import _session_id
from homeport.server.web import rendezvous


def _pool(config: PoolConfig):
    ids = (f"c{i}" for i in itertools.count(1))
    s = Scheduler(lambda: next(ids))
    s.add_pool("p", config, 0.0)
    for cid in ("c1", "c2", "c3"):
        s.container_ready(cid, 0.1)
    return s


def test_session_header_is_read_case_insensitively():
    assert _session_id([(b"Host", b"x"), (b"Modal-Session-ID", b" abc \r")]) == b"abc"
    assert _session_id([(b"modal-session-id", b"k")]) == b"k"
    assert _session_id([(b"Host", b"x")]) is None
    assert _session_id([(b"Modal-Session-ID", b"  ")]) is None


def test_rendezvous_is_stable_and_moves_only_the_sessions_of_a_replica_that_goes():
    replicas = ["c1", "c2", "c3", "c4"]
    sessions = [f"s{i}".encode() for i in range(400)]
    before = {s: rendezvous(s, replicas) for s in sessions}
    assert before == {s: rendezvous(s, list(reversed(replicas))) for s in sessions}  # order does not matter
    assert set(before.values()) == set(replicas)  # sessions spread over every replica
    after = {s: rendezvous(s, ["c1", "c2", "c4"]) for s in sessions}
    moved = {s for s in sessions if before[s] != after[s]}
    assert moved == {s for s in sessions if before[s] == "c3"}
    assert rendezvous(b"s", []) is None


def test_submit_to_gives_the_input_to_the_chosen_ready_replica_with_a_free_slot():
    s = _pool(PoolConfig(min_containers=3, max_inputs=2))
    assert s.ready_containers("p") == ["c1", "c2", "c3"]
    assert s.submit_to("p", "c2", 1, 1.0) == [Assign("c2", (1,))]
    assert s.holds("c2", 1)
    assert s.submit_to("p", "c2", 2, 1.0) == [Assign("c2", (2,))]
    assert s.submit_to("p", "c2", 3, 1.0) is None  # full: the caller queues it as usual
    assert s.submit_to("p", "nope", 4, 1.0) is None
    assert s.submit_to("other", "c1", 5, 1.0) is None

