"""`.map` of many short inputs: they travel and are scheduled in chunks (see `homeport._map` and
`homeport.server.calls`), and each input is still retried, timed out, cancelled and reported on its own."""

import pytest

from homeport.exception import FunctionTimeoutError
from homeport.testing import app_fixture

pytestmark = pytest.mark.integration

chunks = app_fixture("chunks")

N = 5000


def test_a_big_map_keeps_its_order_and_each_input(chunks):
    chunks.ident.remote(0)  # warm: its time per input is known, so the map goes in big chunks
    assert list(chunks.ident.map(range(N))) == list(range(N))
    assert sorted(chunks.ident.map(range(N), order_outputs=False)) == list(range(N))
    assert list(chunks.ident.starmap([(i,) for i in range(N)])) == list(range(N))


def test_arguments_arrive_as_they_were_sent(chunks):
    # Plain positional values travel as themselves (not pickled), the others pickled: both come back equal,
    # of the same type, in a chunk or alone.
    values = [0, 1, -1, 2**63 - 1, -2**63, 2**63, -2**63 - 1, 10**30, 1.5, -0.0, float("inf"), True, False, None,
              "", "abc", "é", "\ud800", "x" * 300, b"", b"\x00\xff", b"y" * 300, (1, 2), [3], {"a": 1}]
    rows = [(v,) for v in values] * 20 + [(1, "a", None, 2.5, b"b", False)] * 20 + [tuple(range(20))] * 5 + [()]
    expected = [[(type(a).__name__, repr(a)) for a in r] for r in rows]
    chunks.describe.remote()  # warm: big chunks
    assert list(chunks.describe.starmap(rows)) == expected
    assert chunks.describe.remote(*rows[3]) == expected[3]


def test_results_come_back_as_they_were_returned(chunks):
    # A plain result travels as itself (not pickled), the others pickled: both come back equal, of the same
    # type, at their place.
    values = [0, 1, -1, 2**63 - 1, -2**63, 2**63, -2**63 - 1, 10**30, 1.5, -0.0, float("inf"), True, False, None,
              "", "abc", "é", "\ud800", "x" * 300, b"", b"\x00\xff", (1, 2), [3], {"a": 1}]
    chunks.ident.remote(0)  # warm: big chunks
    out = list(chunks.ident.map(values * 40))
    assert [(type(v).__name__, repr(v)) for v in out] == [(type(v).__name__, repr(v)) for v in values * 40]
    assert sorted(map(repr, chunks.ident.map(values * 40, order_outputs=False))) == sorted(map(repr, values * 40))


def test_a_failed_input_with_plain_arguments_is_retried_alone(chunks):
    chunks.fails_once_plain.remote(0)
    assert list(chunks.fails_once_plain.map(range(N))) == list(range(N))
    failing = [x for x in range(N) if x % 97 == 3]
    assert {x: chunks.notes.get(f"plain-attempts-{x}") for x in failing} == {x: 2 for x in failing}


def test_each_input_of_a_chunk_has_its_own_input_id(chunks):
    ids = list(chunks.input_id.map(range(2000)))
    assert len(set(ids)) == 2000
    assert all(i.startswith("in-") for i in ids)


def test_a_failed_input_of_a_chunk_is_retried_alone(chunks):
    chunks.fails_once.remote(0, 97)
    assert list(chunks.fails_once.map(range(N), kwargs={"every": 97})) == list(range(N))
    failing = [x for x in range(N) if x % 97 == 3]
    attempts = {x: chunks.notes.get(f"attempts-{x}") for x in failing}
    assert attempts == {x: 2 for x in failing}  # each failed once and ran again once: alone


def test_exceptions_of_a_chunk_come_back_at_their_own_place(chunks):
    chunks.raises.remote(0, 100)
    out = list(chunks.raises.map(range(N), kwargs={"every": 100}, return_exceptions=True))
    assert [i for i, r in enumerate(out) if isinstance(r, Exception)] == [x for x in range(N) if x % 100 == 5]
    assert all(out[i] == i for i in range(N) if i % 100 != 5)
    with pytest.raises(KeyError):
        list(chunks.raises.map(range(N), kwargs={"every": 100}))
    assert list(chunks.raises.map(range(N), kwargs={"every": 100}, order_outputs=False,
                                  return_exceptions=True)).count(None) == 0


def test_an_input_of_a_chunk_times_out_on_its_own(chunks):
    chunks.one_hangs.remote(0, -1)
    out = list(chunks.one_hangs.map(range(3000), kwargs={"which": 1234}, return_exceptions=True))
    assert isinstance(out[1234], FunctionTimeoutError)
    assert [r for i, r in enumerate(out) if i != 1234] == [i for i in range(3000) if i != 1234]


def test_a_container_crash_mid_chunk_reruns_the_rest_once(chunks):
    chunks.one_crashes.remote(0, -1, "unused")
    out = list(chunks.one_crashes.map(range(N), kwargs={"which": 2345, "key": "crashed"}, order_outputs=False))
    assert chunks.notes.get("crashed") is True
    assert len(out) == N and sorted(out) == list(range(N))  # nothing lost, nothing twice


def test_breaking_out_of_a_big_map_cancels_the_rest(chunks):
    chunks.ident.remote(0)
    for i, x in enumerate(chunks.ident.map(range(200_000))):
        assert x == i
        if i == 1000:
            break
    assert list(chunks.ident.map(range(10))) == list(range(10))  # the function still serves


def test_each_input_of_a_chunk_has_the_whole_timeout(chunks):
    assert list(chunks.slow_but_in_time.map(range(-500, 0))) == list(range(-500, 0))  # short: big chunks
    assert list(chunks.slow_but_in_time.map(range(12))) == list(range(12))  # 3.6 s in all, 0.3 s each


def test_a_small_first_map_of_slow_inputs_still_fans_out(chunks):
    pids = list(chunks.slow_pid.map(range(6)))  # nothing known of its time: no input waits behind another
    assert len(set(pids)) > 1


def test_each_input_of_a_chunk_sees_its_own_ids_while_it_runs(chunks):
    chunks.ids.remote(0)  # warm: big chunks
    out = list(chunks.ids.map(range(3000)))
    assert [x for x, _, _ in out] == list(range(3000))
    input_ids = [i for _, i, _ in out]
    assert len(set(input_ids)) == 3000 and all(i.startswith("in-") for i in input_ids)
    calls = {c for _, _, c in out}
    assert len(calls) == 1 and None not in calls  # the map's one call
    assert chunks.ids.remote(1)[1] not in set(input_ids)  # a later call's input is another input


def test_an_exception_mid_chunk_keeps_its_traceback(chunks):
    chunks.raises_deep.remote(0, 1000)
    out = list(chunks.raises_deep.map(range(3000), kwargs={"every": 1000}, return_exceptions=True))
    bad = [i for i, r in enumerate(out) if isinstance(r, Exception)]
    assert bad == [5, 1005, 2005]
    for i in bad:
        err = out[i]
        assert isinstance(err, KeyError) and err.args == (f"deep {i}",)
        notes = "\n".join(getattr(err, "__notes__", []))
        assert "raises_deep" in notes and "_raise_deep" in notes  # the user's frames, both
        assert "_chunk.py" not in notes  # not the runtime's own


def test_values_of_other_kinds_mid_chunk_come_back_at_their_place(chunks):
    from homeport.exception import SerializationError

    chunks.mixed.remote(0)
    n = 1000
    out = list(chunks.mixed.map(range(n), return_exceptions=True))
    for x, r in enumerate(out):
        if x % 50 == 7:
            assert r == {"x": x, "sq": [x, x * x]}
        elif x % 50 == 11:
            assert type(r).__name__ == "Point" and r.x == x
        elif x % 50 == 13:
            assert isinstance(r, SerializationError), r
        elif x % 50 == 17:
            assert r == -x
        else:
            assert r == x
