"""Every Dict and Queue method in its `.aio` form, from an async entrypoint."""

import queue

import modal

app = modal.App("dq-aio")


@app.function()
async def remote_put(q: modal.Queue, value: str) -> None:
    await q.put.aio(value, partition="remote")


@app.local_entrypoint()
async def main():
    async with modal.Queue.ephemeral() as q:
        await q.put.aio(1)
        await q.put_many.aio([2, 3])
        assert await q.len.aio() == 3
        assert [x async for x in q.iterate.aio()] == [1, 2, 3]
        assert await q.get.aio() == 1
        assert await q.get_many.aio(5) == [2, 3]
        assert await q.get.aio(block=False) is None
        try:
            await q.get.aio(timeout=0.2)
            raise AssertionError("expected queue.Empty")
        except queue.Empty:
            pass
        await remote_put.remote.aio(q, "from a container")
        assert await q.get.aio(partition="remote") == "from a container"
        await q.put.aio(4, partition="x")
        assert await q.len.aio(total=True) == 1
        await q.clear.aio(all=True)
        assert await q.len.aio(total=True) == 0
        assert (await q.info.aio()).name is None

    await modal.Dict.objects.create.aio("dq-aio-dict", allow_existing=True)
    d = modal.Dict.from_name("dq-aio-dict")
    await d.clear.aio()
    assert await d.put.aio("k", 1) is True
    assert await d.put.aio("k", 2, skip_if_exists=True) is False
    await d.update.aio({"a": 1}, b=2)
    assert await d.get.aio("k") == 1
    assert await d.contains.aio("a")
    assert await d.len.aio() == 3
    assert sorted([k async for k in d.keys.aio()]) == ["a", "b", "k"]
    assert sorted([v async for v in d.values.aio()]) == [1, 1, 2]
    assert sorted([kv async for kv in d.items.aio()]) == [("a", 1), ("b", 2), ("k", 1)]
    assert await d.pop.aio("a") == 1
    assert (await d.info.aio()).name == "dq-aio-dict"
    assert "dq-aio-dict" in [o.name for o in await modal.Dict.objects.list.aio()]
    await (await d.hydrate.aio()).clear.aio()
    await modal.Dict.objects.delete.aio("dq-aio-dict")
    print("AIO OK")
