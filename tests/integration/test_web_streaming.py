"""Streamed web responses end when their generator ends, under concurrency."""

import concurrent.futures

import httpx
import pytest

from homeport.testing import app_fixture

pytestmark = pytest.mark.integration

streaming = app_fixture("streaming_app", directory="programs")


def test_concurrent_streamed_responses_each_end_with_their_generator(streaming):
    # Several web containers, forked from one template, each stream a generator call at once: each
    # response carries all its frames and ends (were the copies to draw the same call ids, one
    # container's outputs would go to another's caller, and a response would hang).
    urls = [streaming.stream.web_url, streaming.stream2.web_url, streaming.stream3.web_url] * 2

    def get(i_url):
        i, url = i_url
        with httpx.stream("GET", url, params={"n": 10 + i}, timeout=60) as r:
            return r.status_code, "".join(r.iter_text())

    for _ in range(2):
        with concurrent.futures.ThreadPoolExecutor(len(urls)) as pool:
            results = list(pool.map(get, enumerate(urls)))
        for i, (status, text) in enumerate(results):
            assert status == 200
            assert text == "".join(f"frame {k}\n" for k in range(10 + i)), (i, text)


def test_a_call_id_in_use_is_not_taken_over(streaming):
    # A caller (a hostile container, say) that sends a call with another call's id gets an error,
    # and the first call's outputs still reach the first caller.
    from homeport import _protocol as P
    from homeport._bridge import run_sync
    from homeport._client import get_client
    from homeport._serialization import serialize_args

    fid = streaming.frames.object_id
    data = serialize_args("frames", (3,), {})

    async def go():
        import asyncio

        client = await get_client()
        got: dict[str, list] = {"first": [], "second": []}
        done = asyncio.get_running_loop().create_future()

        def first(kind, items):
            got["first"].append((kind, items))
            if kind == P.OUTPUTS and not done.done():
                done.set_result(None)

        call_id = "fc-test-duplicate-0000000001"
        client.watch_call(call_id, first)
        client.send({"t": P.CALL, "call": call_id, "fid": fid, "kind": P.KIND_GENERATOR, "inputs": [[0, data, None]]})
        reply = None
        try:
            await client.request({"t": P.CALL, "call": call_id, "fid": fid, "kind": P.KIND_GENERATOR,
                                  "inputs": [[0, data, None]]})
        except Exception as exc:  # the refusal is what is asserted
            reply = exc
        await asyncio.wait_for(done, 60)
        client.unwatch_call(call_id)
        return got, reply

    got, reply = run_sync(go())
    assert reply is not None and "already in use" in str(reply)
    items = [i for kind, items in got["first"] if kind == P.GEN_ITEMS for i in items]
    assert len(items) == 3  # the first call's items all reached it, once
