"""Generator functions: .remote_gen, in a loop and as an async iterator."""

import asyncio

import modal

app = modal.App("compat-generators")


@app.function()
def countdown(n: int):
    for i in range(n, 0, -1):
        print(f"counting {i}")
        yield i


@app.local_entrypoint()
def main():
    assert list(countdown.remote_gen(3)) == [3, 2, 1]

    async def collect():
        return [x async for x in countdown.remote_gen.aio(2)]

    assert asyncio.run(collect()) == [2, 1]
    print("COMPAT OK generators")


if __name__ == "__main__":
    with app.run():
        main()
