import modal

app = modal.App("async-app")


@app.function()
async def double(x: int) -> int:
    return 2 * x


@app.local_entrypoint()
async def main(x: int = 4):
    print("doubled", await double.remote.aio(x))
