"""`fastapi_endpoint`s that stream `.remote_gen` output (as Modal's 07_web/streaming.py)."""

import time

import modal

app = modal.App("streamer")


@app.function()
def frames(n: int):
    for i in range(n):
        time.sleep(0.02)
        yield f"frame {i}\n"


@app.function()
@modal.fastapi_endpoint()
def stream(n: int = 10):
    from fastapi.responses import StreamingResponse

    return StreamingResponse(frames.remote_gen(n), media_type="text/plain")


@app.function()
@modal.fastapi_endpoint()
def stream2(n: int = 10):
    from fastapi.responses import StreamingResponse

    return StreamingResponse(frames.remote_gen(n), media_type="text/plain")


@app.function()
@modal.fastapi_endpoint()
async def stream3(n: int = 10):
    from fastapi.responses import StreamingResponse

    async def gen():
        async for x in frames.remote_gen.aio(n):
            yield x

    return StreamingResponse(gen(), media_type="text/plain")
