"""Async functions and the .aio interface: gather remote calls, map.aio."""

import asyncio

import modal

app = modal.App("compat-async")


@app.function()
async def slow_double(x: int) -> int:
    await asyncio.sleep(0.05)
    return 2 * x


@app.function()
def inc(x: int) -> int:
    return x + 1


async def run_async() -> None:
    results = await asyncio.gather(*(slow_double.remote.aio(i) for i in range(4)))
    assert results == [0, 2, 4, 6]
    assert [y async for y in inc.map.aio(range(3))] == [1, 2, 3]


@app.local_entrypoint()
async def main():
    await run_async()
    print("COMPAT OK async")


if __name__ == "__main__":

    async def _main():
        async with app.run():
            await main()

    asyncio.run(_main())
