"""The web endpoint gateway between real clients (httpx, raw sockets) and real upstreams (uvicorn on Unix
sockets serving Starlette apps, or raw Unix socket servers where a test needs a misbehaving one).

Every test runs its body on uvloop, as the control plane does, bounded in time, and checks that the
gateway left no task behind; `Slots` checks that every acquired container slot was released once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable

import httpx
import pytest
import uvicorn
import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from homeport.server.gateway import AUTH_MESSAGE, NO_ENDPOINT, Endpoint, Gateway, HTTPError, Upstream

NAME = "app 'shop' function 'api'"
MiB = 1 << 20


# --- harness -----------------------------------------------------------------------------------------
def run(body: Callable[[], Awaitable[None]], timeout: float = 30.0) -> None:
    async def main() -> None:
        await asyncio.wait_for(body(), timeout)
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not left, f"tasks left behind: {left}"

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 (a condition on plain state, not an event)
            await asyncio.sleep(0.005)


@pytest.fixture
def sock_dir():
    # Short: a Unix socket path must fit in 107 bytes, and pytest's tmp_path may not.
    d = tempfile.mkdtemp(prefix="hp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


class Slots:
    """An `Endpoint.acquire` that counts slots, can make callers wait (a full pool) or refuse."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.acquired = self.released = self.double = self.cancelled = self.waiting = 0
        self.gate: asyncio.Event | None = None
        self.error: HTTPError | None = None

    async def acquire(self) -> Upstream:
        if self.error is not None:
            raise self.error
        if self.gate is not None:
            self.waiting += 1
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            finally:
                self.waiting -= 1
        self.acquired += 1
        once = []

        def release() -> None:
            self.double += bool(once)
            once.append(1)
            self.released += 1

        return Upstream(self.path, release)

    def balanced(self) -> bool:
        return self.released == self.acquired and self.double == 0


class AppState:
    def __init__(self) -> None:
        self.stop = asyncio.Event()  # set at teardown so that no handler outlives its test
        self.acks = [asyncio.Event() for _ in range(3)]
        self.hanging = asyncio.Event()
        self.saw_disconnect = asyncio.Event()


PIECE = bytes(range(256)) * 256  # 64 KiB
SLOW_READER = 200 * MiB  # bytes/s: slower than the gateway can move them, so that they would pile up


def web_app(state: AppState) -> Starlette:
    async def echo(request: Request) -> Response:
        body = await request.body()
        target = request.scope["raw_path"].decode()
        if request.scope["query_string"]:
            target += "?" + request.scope["query_string"].decode()
        return JSONResponse({
            "method": request.method,
            "target": target,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.headers.raw],
            "body": body.decode("latin-1"),
        })

    async def upload(request: Request) -> Response:
        digest, n = hashlib.sha256(), 0
        async for chunk in request.stream():
            digest.update(chunk)
            n += len(chunk)
            await asyncio.sleep(len(chunk) / SLOW_READER)  # without flow control the gateway would fill up
        return JSONResponse({"bytes": n, "sha256": digest.hexdigest()})

    async def download(request: Request) -> Response:
        async def pieces():
            for _ in range(int(request.query_params["mib"]) * 16):
                yield PIECE

        return StreamingResponse(pieces())

    async def steps(request: Request) -> Response:
        async def lockstep():
            for i in range(3):
                yield f"step {i}\n".encode()
                # The next chunk is made only once the client has this one: buffering would deadlock.
                await asyncio.wait_for(state.acks[i].wait(), 10)

        return StreamingResponse(lockstep(), media_type="text/plain")

    async def stall(request: Request) -> Response:
        async def first_then_nothing():
            yield b"first\n"
            await state.stop.wait()

        return StreamingResponse(first_then_nothing())

    async def slow(request: Request) -> Response:
        await state.stop.wait()
        return PlainTextResponse("late")

    async def hang(request: Request) -> Response:
        await request.body()
        state.hanging.set()
        message = await request.receive()  # returns when the connection is gone
        if message["type"] == "http.disconnect":
            state.saw_disconnect.set()
        return Response()

    async def sized(request: Request) -> Response:
        return Response(b"x" * 1000, media_type="text/plain")

    async def status(request: Request) -> Response:
        return Response(status_code=int(request.path_params["code"]))

    return Starlette(routes=[
        Route("/echo", echo, methods=["GET", "POST", "PUT", "DELETE"]),
        Route("/upload", upload, methods=["POST", "PUT"]),
        Route("/download", download),
        Route("/steps", steps),
        Route("/stall", stall),
        Route("/slow", slow),
        Route("/hang", hang),
        Route("/sized", sized, methods=["GET", "HEAD"]),
        Route("/status/{code}", status),
    ])


@contextlib.asynccontextmanager
async def uvicorn_upstream(path: str, state: AppState | None = None):
    state = state or AppState()
    server = uvicorn.Server(uvicorn.Config(web_app(state), uds=path, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    await until(lambda: server.started or task.done())
    try:
        yield state
    finally:
        state.stop.set()
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def raw_upstream(path: str, handler):
    """A Unix socket HTTP server written by hand, for upstreams that misbehave on purpose.
    Yields the list of connections it accepted."""
    accepted: list[asyncio.StreamWriter] = []
    tasks: set[asyncio.Task] = set()

    async def serve(reader, writer):
        accepted.append(writer)
        tasks.add(asyncio.current_task())
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            tasks.discard(asyncio.current_task())

    server = await asyncio.start_unix_server(serve, path)
    try:
        yield accepted
    finally:
        server.close()
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


@contextlib.asynccontextmanager
async def gateway(endpoint: Endpoint | None):
    gw = Gateway()
    port = await gw.open()
    if endpoint is not None:
        gw.route(port, endpoint)
    try:
        yield gw, port
    finally:
        await gw.close()
        assert not gw._live, "connections left open"


def client(port: int, **kw) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=20, **kw)


class Response1:
    """A response read off a raw socket."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)


async def read_response(reader: asyncio.StreamReader, head_request: bool = False) -> Response1:
    head = (await read_head(reader)).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = [tuple(x.strip() for x in line.split(":", 1)) for line in head[1:] if line]
    r = Response1(status, headers, b"")  # type: ignore[arg-type]
    if head_request or status in (204, 304) or 100 <= status < 200:
        return r
    if r.header("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            body += (await reader.readexactly(size + 2))[:-2]
            if size == 0:
                break
        r.body = body
    elif r.header("content-length") is not None:
        r.body = await reader.readexactly(int(r.header("content-length")))
    else:
        r.body = await reader.read()
    return r


@contextlib.asynccontextmanager
async def raw_client(port: int):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def echoed(r) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for k, v in r.json()["headers"]:
        headers.setdefault(k, []).append(v)
    return headers


# --- forwarding ----------------------------------------------------------------------------------------
def test_request_head_is_forwarded_without_hop_by_hop_headers_and_with_forwarding_headers(sock_dir):
    path = os.path.join(sock_dir, "s")
    slots = Slots(path)
    ep = Endpoint(NAME, slots.acquire, extra_headers=((b"X-Modal-Function", b"api"),))

    async def body():
        async with uvicorn_upstream(path), gateway(ep) as (_gw, port), raw_client(port) as (reader, writer):
            writer.write(
                b"DELETE /echo?x=1&y=%20 HTTP/1.1\r\n"
                b"Host: shop.example:8443\r\n"
                b"Connection: keep-alive, X-Hop\r\n"
                b"X-Hop: secret\r\n"
                b"Keep-Alive: timeout=5\r\n"
                b"Proxy-Connection: keep-alive\r\n"
                b"TE: trailers\r\n"
                b"Trailer: X-T\r\n"
                b"Upgrade: h2c\r\n"
                b"X-Forwarded-For: 6.6.6.6\r\n"
                b"X-Forwarded-Proto: https\r\n"
                b"x-modal-function: forged\r\n"
                b"X-Kept: yes\r\n"
                b"Content-Length: 3\r\n\r\nabc"
            )
            r = await read_response(reader)
            assert r.status == 200
            sent = json.loads(r.body)
            assert (sent["method"], sent["target"], sent["body"]) == ("DELETE", "/echo?x=1&y=%20", "abc")
            headers: dict[str, list[str]] = {}
            for k, v in sent["headers"]:
                headers.setdefault(k, []).append(v)
            assert headers["host"] == ["shop.example:8443"]
            assert headers["x-kept"] == ["yes"]
            assert headers["content-length"] == ["3"]
            for hop in ("connection", "x-hop", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"):
                assert hop not in headers, hop
            assert headers["x-forwarded-for"] == ["127.0.0.1"]
            assert headers["x-forwarded-proto"] == ["http"]
            assert headers["x-modal-function"] == ["api"]
        assert slots.acquired == 1 and slots.balanced()

    run(body)


def test_chunked_request_body_is_rechunked_and_content_length_body_kept(sock_dir):
    path = os.path.join(sock_dir, "s")
    slots = Slots(path)

    async def body():
        async with uvicorn_upstream(path), gateway(Endpoint(NAME, slots.acquire)) as (_gw, port):
            async with client(port) as c:

                async def parts():
                    for word in (b"alpha ", b"beta ", b"gamma"):
                        yield word

                r = await c.post("/echo", content=parts())  # no length: httpx sends it chunked
                assert r.json()["body"] == "alpha beta gamma"
                assert echoed(r)["transfer-encoding"] == ["chunked"]
                r = await c.put("/echo", content=b"x" * 300_000)
                assert r.json()["body"] == "x" * 300_000
                assert echoed(r)["content-length"] == ["300000"]
                assert "transfer-encoding" not in echoed(r)
        assert slots.acquired == 2 and slots.balanced()

    run(body)


def test_expect_100_continue_is_answered_by_the_gateway(sock_dir):
    path = os.path.join(sock_dir, "s")
    slots = Slots(path)

    async def body():
        async with uvicorn_upstream(path), gateway(Endpoint(NAME, slots.acquire)) as (_gw, port):
            async with raw_client(port) as (reader, writer):
                writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
                assert await read_head(reader) == b"HTTP/1.1 100 Continue\r\n\r\n"
                writer.write(b"hello")
                r = await read_response(reader)
                sent = json.loads(r.body)
                assert r.status == 200 and sent["body"] == "hello"
                assert "expect" not in {k for k, _ in sent["headers"]}
        assert slots.balanced()

    run(body)


def test_100mb_upload_streams_through_with_bounded_memory(sock_dir):
    path = os.path.join(sock_dir, "s")
    slots = Slots(path)
    count = 100 * MiB // len(PIECE)

    async def body():
        async with uvicorn_upstream(path), gateway(Endpoint(NAME, slots.acquire)) as (gw, port):
            peak = await with_peak_buffering(gw, upload(port))
            assert peak < 2 * MiB, f"the gateway held {peak} bytes of the upload at once"
        assert slots.balanced()

    async def upload(port):
        async def pieces():
            for _ in range(count):
                yield PIECE

        async with client(port) as c:
            r = await c.post("/upload", content=pieces())
        expected = hashlib.sha256()
        for _ in range(count):
            expected.update(PIECE)
        assert r.json() == {"bytes": count * len(PIECE), "sha256": expected.hexdigest()}

    run(body, timeout=60)


def test_big_download_to_a_slow_client_streams_with_bounded_memory(sock_dir):
    path = os.path.join(sock_dir, "s")
    slots = Slots(path)

    async def body():
        async with uvicorn_upstream(path), gateway(Endpoint(NAME, slots.acquire)) as (gw, port):
            peak = await with_peak_buffering(gw, download(port))
            assert peak < 2 * MiB, f"the gateway held {peak} bytes of the download at once"
        assert slots.balanced()

    async def download(port):
        digest, n = hashlib.sha256(), 0
        async with client(port) as c, c.stream("GET", "/download?mib=40") as r:
            assert r.headers["transfer-encoding"] == "chunked"
            async for chunk in r.aiter_raw():
                digest.update(chunk)
                n += len(chunk)
                await asyncio.sleep(len(chunk) / SLOW_READER)
        expected = hashlib.sha256()
        for _ in range(40 * 16):
            expected.update(PIECE)
        assert (n, digest.hexdigest()) == (40 * MiB, expected.hexdigest())

    run(body, timeout=60)


async def with_peak_buffering(gw: Gateway, work: Awaitable[None]) -> int:
    """Runs `work` while sampling what the gateway holds: transport write buffers and held request bytes,
    and the process's resident memory; returns the peak of the first, checks the second."""

    def held() -> int:
        total = 0
        for conn in list(gw._live):
            transport = conn.transport  # type: ignore[attr-defined]
            if transport is not None and not transport.is_closing():
                total += transport.get_write_buffer_size()
            active = getattr(conn, "active", None)
            if active is not None:
                total += active.held_size
        return total

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    peak, peak_rss, start_rss = 0, 0, rss()
    task = asyncio.ensure_future(work)
    while not task.done():
        peak = max(peak, held())
        peak_rss = max(peak_rss, rss())
        await asyncio.wait([task], timeout=0.002)
    await task
    assert peak_rss - start_rss < 60 * MiB, f"resident memory grew by {(peak_rss - start_rss) // MiB} MiB"
    return peak


def test_streaming_response_reaches_the_client_chunk_by_chunk(sock_dir):
    path = os.path.join(sock_dir, "s")
    slots = Slots(path)

    async def body():
        async with uvicorn_upstream(path) as state, gateway(Endpoint(NAME, slots.acquire)) as (_gw, port):
            async with client(port) as c, c.stream("GET", "/steps") as r:
                assert r.headers["transfer-encoding"] == "chunked"
                got = b""
                async for chunk in r.aiter_raw():
                    got += chunk
                    for i in range(3):
                        if f"step {i}\n".encode() in got:
                            state.acks[i].set()
                assert got == b"step 0\nstep 1\nstep 2\n"
        assert slots.balanced()

    run(body)


def test_close_delimited_and_interim_responses_are_reframed(sock_dir):
    path = os.path.join(sock_dir, "s")
    slots = Slots(path)

    async def handler(reader, writer):
        head = await read_head(reader)
        if b"/hints" in head:
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
                         b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await read_head(reader)  # keep-alive: the gateway may send another request here
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
            await writer.drain()

    async def body():
        async with raw_upstream(path, handler), gateway(Endpoint(NAME, slots.acquire)) as (_gw, port):
            async with raw_client(port) as (reader, writer):
                writer.write(b"GET /eof HTTP/1.1\r\nHost: x\r\n\r\n")
                r = await read_response(reader)
                assert (r.status, r.header("transfer-encoding"), r.body) == (200, "chunked", b"until the end")
                assert r.header("connection") is None  # the client connection is kept
                writer.write(b"GET /hints HTTP/1.1\r\nHost: x\r\n\r\n")
                interim = await read_response(reader)
                assert (interim.status, interim.header("link")) == (103, "</a.css>")
                r = await read_response(reader)
                assert (r.status, r.body) == (200, b"ok")
            async with raw_client(port) as (reader, writer):
                # An HTTP/1.0 client takes neither chunks nor interim responses.
                for _ in range(2):
                    writer.write(b"GET /hints HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                    r = await read_response(reader)
                    assert (r.status, r.body, r.header("connection")) == (200, b"ok", "keep-alive")
                writer.write(b"GET /eof HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                r = await read_response(reader)  # read to the end of the connection
                assert (r.status, r.header("transfer-encoding"), r.body) == (200, None, b"until the end")
                assert r.header("connection") == "close"
        assert slots.acquired == 5 and slots.balanced()

    run(body)


def test_head_204_and_304_responses_have_no_body_and_keep_both_connections(sock_dir):
    path = os.path.join(sock_dir, "s")
    slots = Slots(path)

    async def body():
        async with uvicorn_upstream(path), gateway(Endpoint(NAME, slots.acquire)) as (_gw, port):
            async with raw_client(port) as (reader, writer):
                for _ in range(2):
                    writer.write(b"HEAD /sized HTTP/1.1\r\nHost: x\r\n\r\n")
                    r = await read_response(reader, head_request=True)
                    assert (r.status, r.header("content-length")) == (200, "1000")
                    # Had llhttp waited for the 1000 bytes HEAD announced, this would get lost.
                    writer.write(b"GET /sized HTTP/1.1\r\nHost: x\r\n\r\n")
                    r = await read_response(reader)
                    assert r.body == b"x" * 1000
                for code in (204, 304):
                    writer.write(b"GET /status/%d HTTP/1.1\r\nHost: x\r\n\r\n" % code)
                    r = await read_response(reader)
                    assert r.status == code and r.header("transfer-encoding") is None
                writer.write(b"GET /sized HTTP/1.1\r\nHost: x\r\n\r\n")
                r = await read_response(reader)
                assert r.body == b"x" * 1000
                # No stray body byte came after any of them.
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(reader.read(1), 0.1)
        assert slots.acquired == 7 and slots.balanced()

    run(body)


# --- keep-alive, pooling, pipelining ---------------------------------------------------------------
def test_keep_alive_reuses_one_upstream_connection_and_a_broken_one_is_not_reused(sock_dir):
    path = os.path.join(sock_dir, "s")
    slots = Slots(path)

    async def handler(reader, writer):
        while True:
            head = await read_head(reader)
            if b"/broken" in head:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n")
                await writer.drain()
                await reader.read()
                return
            if head.startswith(b"HEAD"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")

    async def body():
        async with raw_upstream(path, handler) as accepted, gateway(Endpoint(NAME, slots.acquire)) as (_gw, port):
            async with client(port) as c:
                for _ in range(5):
                    assert (await c.get("/a")).text == "hello"
                    assert (await c.head("/a")).headers["content-length"] == "1000"
                assert len(accepted) == 1
                assert slots.acquired == slots.released == 10
                r = await c.get("/broken")
                assert r.status_code == 502 and NAME in r.text and "invalid HTTP response" in r.text
                assert (await c.get("/a")).text == "hello"
                assert len(accepted) == 2
        assert slots.acquired == 12 and slots.balanced()

    run(body)


def test_a_pooled_connection_closed_by_the_container_is_retried_on_a_fresh_one(sock_dir):
    path = os.path.join(sock_dir, "s")
    slots = Slots(path)

    async def handler(reader, writer):
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await read_head(reader)  # its keep-alive timeout strikes just as the next request arrives
        writer.transport.abort()

    async def body():
        async with raw_upstream(path, handler) as accepted, gateway(Endpoint(NAME, slots.acquire)) as (_gw, port):
            async with client(port) as c:
                assert (await c.get("/")).text == "ok"
                assert (await c.get("/")).text == "ok"
                assert len(accepted) == 2
        assert slots.acquired == 2 and slots.balanced()

    run(body)


def test_pipelined_requests_are_answered_in_order(sock_dir):
    path = os.path.join(sock_dir, "s")
    slots = Slots(path)

    async def body():
        async with uvicorn_upstream(path), gateway(Endpoint(NAME, slots.acquire)) as (_gw, port):
            async with raw_client(port) as (reader, writer):
                writer.write(
                    b"GET /echo?n=1 HTTP/1.1\r\nHost: x\r\n\r\n"
                    b"POST /echo?n=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"
                    b"POST /echo?n=3 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                    b"GET /echo?n=4 HTTP/1.1\r\nHost: x\r\n\r\n"
                )
                got = [json.loads((await read_response(reader)).body) for _ in range(4)]
                assert [(g["target"], g["body"]) for g in got] == [
                    ("/echo?n=1", ""), ("/echo?n=2", "body"), ("/echo?n=3", "abc"), ("/echo?n=4", "")
                ]
        assert slots.acquired == 4 and slots.balanced()

    run(body)


# --- errors ------------------------------------------------------------------------------------------
def test_unrouted_and_stopped_ports_answer_404_with_why(sock_dir):
    path = os.path.join(sock_dir, "s")
    slots = Slots(path)

    async def body():
        async with uvicorn_upstream(path), gateway(None) as (gw, port):
            async with client(port) as c:
                r = await c.get("/")
                assert (r.status_code, r.text.strip()) == (404, NO_ENDPOINT)
                assert r.headers["content-type"].startswith("text/plain")
                gw.route(port, Endpoint(NAME, slots.acquire))
                assert (await c.get("/echo")).status_code == 200
                gw.route(port, None, gone="app 'shop' was stopped")
                r = await c.get("/echo")
                assert (r.status_code, r.text.strip()) == (404, "app 'shop' was stopped")
        assert slots.acquired == 1 and slots.balanced()

    run(body)


def test_authorize_false_answers_401_and_sees_the_client_headers(sock_dir):
    path = os.path.join(sock_dir, "s")
    slots = Slots(path)

    def authorize(headers: list[tuple[bytes, bytes]]) -> bool:
        h = {k.lower(): v for k, v in headers}
        return h.get(b"modal-key") == b"wk-1" and h.get(b"modal-secret") == b"ws-1"

    async def body():
        ep = Endpoint(NAME, slots.acquire, authorize=authorize)
        async with uvicorn_upstream(path), gateway(ep) as (_gw, port), client(port) as c:
            r = await c.get("/echo")
            assert (r.status_code, r.text.strip()) == (401, AUTH_MESSAGE)
            r = await c.get("/echo", headers={"Modal-Key": "wk-1", "Modal-Secret": "wrong"})
            assert r.status_code == 401
            r = await c.get("/echo", headers={"Modal-Key": "wk-1", "Modal-Secret": "ws-1"})
            assert r.status_code == 200
        assert slots.acquired == 1 and slots.balanced()

    run(body)


def test_the_proxy_credentials_are_not_forwarded_upstream(sock_dir):
    path = os.path.join(sock_dir, "s")
    slots = Slots(path)
    creds = {"Modal-Key": "wk-1", "Modal-Secret": "ws-1"}

    async def body():
        authorized = Endpoint(NAME, slots.acquire, authorize=lambda headers: True)
        async with uvicorn_upstream(path), gateway(authorized) as (gw, port), client(port) as c:
            r = await c.get("/echo", headers={**creds, "MODAL-SECRET": "ws-again", "X-Kept": "yes"})
            assert r.status_code == 200
            headers = echoed(r)
            assert "modal-key" not in headers and "modal-secret" not in headers
            assert headers["x-kept"] == ["yes"]
            # A public endpoint checks nothing, so it has nothing to keep from its code.
            gw.route(port, Endpoint(NAME, slots.acquire))
            r = await c.get("/echo", headers=creds)
            assert echoed(r)["modal-key"] == ["wk-1"]
        assert slots.acquired == 2 and slots.balanced()

    run(body)


def test_an_upload_refused_early_gets_its_answer_not_a_reset(sock_dir):
    # The gateway answers before the body; the client keeps sending 30 MB it must be allowed to finish.
    slots = Slots(os.path.join(sock_dir, "s"))

    async def body():
        ep = Endpoint(NAME, slots.acquire, authorize=lambda headers: False)
        async with gateway(ep) as (_, port), client(port) as c:
            for _ in range(2):
                r = await c.post("/upload", content=b"x" * (30 * MiB))
                assert (r.status_code, r.text.strip()) == (401, AUTH_MESSAGE)
            # Answered by the parser itself, as soon as the head passed its limit.
            r = await c.post("/upload", content=b"x" * (30 * MiB), headers={"X-Big": "a" * 70_000})
            assert r.status_code == 431
        assert slots.acquired == 0

    run(body)


def test_http_error_from_acquire_is_the_answer_and_nothing_is_released(sock_dir):
    slots = Slots(os.path.join(sock_dir, "s"))
    slots.error = HTTPError(503, "app 'shop' has no container that can start: out of memory")

    async def body():
        async with gateway(Endpoint(NAME, slots.acquire)) as (_gw, port), client(port) as c:
            r = await c.post("/echo", content=b"x" * 200_000)
            assert (r.status_code, r.text.strip()) == (503, slots.error.message)
            assert (await c.get("/")).status_code == 503
        assert slots.acquired == slots.released == 0

    run(body)


def test_connect_failure_answers_502_naming_the_endpoint(sock_dir):
    slots = Slots(os.path.join(sock_dir, "nobody-listens"))

    async def body():
        async with gateway(Endpoint(NAME, slots.acquire)) as (_gw, port), client(port) as c:
            r = await c.get("/")
            assert r.status_code == 502 and NAME in r.text and "could not connect" in r.text
        assert slots.acquired == 1 and slots.balanced()

    run(body)


def test_upstream_closing_before_the_response_head_answers_502(sock_dir):
    path = os.path.join(sock_dir, "s")
    slots = Slots(path)

    async def handler(reader, writer):
        await read_head(reader)  # and goes away without a word

    async def body():
        async with raw_upstream(path, handler), gateway(Endpoint(NAME, slots.acquire)) as (_gw, port):
            async with client(port) as c:
                r = await c.get("/")
                assert r.status_code == 502 and NAME in r.text and "before sending a response" in r.text
        assert slots.acquired == 1 and slots.balanced()

    run(body)


def test_timeout_answers_504_before_the_head_and_cuts_the_client_off_after_it(sock_dir):
    path = os.path.join(sock_dir, "s")
    slots = Slots(path)

    async def body():
        ep = Endpoint(NAME, slots.acquire, timeout=0.3)
        async with uvicorn_upstream(path), gateway(ep) as (_gw, port), client(port) as c:
            r = await c.get("/slow")
            assert r.status_code == 504 and NAME in r.text and "0.3 s" in r.text
            async with c.stream("GET", "/stall") as r:
                assert r.status_code == 200
                with pytest.raises(httpx.RemoteProtocolError):
                    await r.aread()
        assert slots.acquired == 2 and slots.balanced()

    run(body)


def test_the_timeout_counts_from_the_slot_not_from_the_wait_for_it(sock_dir):
    # A cold start (or a queue) longer than the function's timeout is not the function running.
    path = os.path.join(sock_dir, "s")
    slots = Slots(path)
    timeout = 0.5

    async def cold_start() -> Upstream:
        await asyncio.sleep(2 * timeout)
        return await slots.acquire()

    async def body():
        ep = Endpoint(NAME, cold_start, timeout=timeout)
        async with uvicorn_upstream(path), gateway(ep) as (_gw, port), client(port) as c:
            r = await c.get("/echo")
            assert r.status_code == 200 and r.json()["target"] == "/echo"
            r = await c.get("/slow")  # and once it has its slot, the exchange is bounded all the same
            assert r.status_code == 504 and "0.5 s" in r.text
        assert slots.acquired == 2 and slots.balanced()

    run(body)


@pytest.mark.parametrize("framing", [b"Content-Length: 100\r\n", b"Transfer-Encoding: chunked\r\n"])
def test_upstream_dying_mid_response_truncates_the_client_response(sock_dir, framing):
    path = os.path.join(sock_dir, "s")
    slots = Slots(path)

    async def handler(reader, writer):
        await read_head(reader)
        part = b"5\r\nhello\r\n" if b"chunked" in framing else b"hello"
        writer.write(b"HTTP/1.1 200 OK\r\n" + framing + b"\r\n" + part)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()

    async def body():
        async with raw_upstream(path, handler), gateway(Endpoint(NAME, slots.acquire)) as (_gw, port):
            async with client(port) as c:
                with pytest.raises(httpx.RemoteProtocolError):
                    await c.get("/")
        await until(lambda: slots.released == 1)
        assert slots.acquired == 1 and slots.balanced()

    run(body)


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 1000) for i in range(80)), 431),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: " + b"a" * 200_000, 431),
    ],
    ids=["garbage", "length-and-chunked", "one-huge-header", "many-headers", "unfinished-header"],
)
def test_malformed_and_oversized_requests(sock_dir, request_bytes, status):
    slots = Slots(os.path.join(sock_dir, "s"))

    async def body():
        async with gateway(Endpoint(NAME, slots.acquire)) as (_gw, port), raw_client(port) as (reader, writer):
            writer.write(request_bytes)
            r = await read_response(reader)
            assert r.status == status and r.header("connection") == "close"
            assert await reader.read() == b""  # and the connection ends
        assert slots.acquired == 0

    run(body)


# --- clients that leave -----------------------------------------------------------------------------
def test_client_leaving_while_waiting_for_a_container_cancels_acquire(sock_dir):
    slots = Slots(os.path.join(sock_dir, "s"))
    slots.gate = asyncio.Event()  # never set: the pool stays full

    async def body():
        async with gateway(Endpoint(NAME, slots.acquire)) as (_gw, port):
            async with raw_client(port) as (_reader, writer):
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                await until(lambda: slots.waiting == 1)
            await until(lambda: slots.cancelled == 1)
        assert slots.acquired == slots.released == 0

    run(body)


def test_client_leaving_mid_exchange_closes_the_upstream_connection_and_releases(sock_dir):
    path = os.path.join(sock_dir, "s")
    slots = Slots(path)

    async def body():
        async with uvicorn_upstream(path) as state, gateway(Endpoint(NAME, slots.acquire)) as (gw, port):
            async with raw_client(port) as (_reader, writer):
                writer.write(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
                await state.hanging.wait()
            await asyncio.wait_for(state.saw_disconnect.wait(), 10)
            await until(lambda: slots.released == 1)
            assert not gw._pool
        assert slots.acquired == 1 and slots.balanced()

    run(body)


# --- upgrades ----------------------------------------------------------------------------------------
def test_websocket_upgrade_tunnels_bytes_both_ways(sock_dir):
    path = os.path.join(sock_dir, "s")
    slots = Slots(path)
    seen: list[bytes] = []

    async def handler(reader, writer):
        head = await read_head(reader)
        seen.append(head)
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nhi from upstream|")
        while data := await reader.read(65536):
            writer.write(data.upper())

    async def body():
        async with raw_upstream(path, handler), gateway(Endpoint(NAME, slots.acquire)) as (_gw, port):
            async with raw_client(port) as (reader, writer):
                writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                             b"early|")
                head = await read_head(reader)
                assert head.startswith(b"HTTP/1.1 101 ")
                assert b"upgrade: websocket" in head.lower() and b"connection: upgrade" in head.lower()
                assert b"sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=" in head.lower()
                got = b""
                writer.write(b"ping|" * 1000)
                want = b"hi from upstream|EARLY|" + b"PING|" * 1000
                while len(got) < len(want):
                    got += await reader.read(65536)
                assert got == want
                assert not slots.released  # the tunnel is still up
            await until(lambda: slots.released == 1)
        sent = seen[0].lower()
        assert b"upgrade: websocket" in sent and b"connection: upgrade" in sent
        assert b"sec-websocket-key: dghlihnhbxbszsbub25jzq==" in sent
        assert slots.acquired == 1 and slots.balanced()

    run(body)


def test_other_upgrades_are_served_as_plain_requests_and_connect_is_refused(sock_dir):
    path = os.path.join(sock_dir, "s")
    slots = Slots(path)

    async def body():
        async with uvicorn_upstream(path), gateway(Endpoint(NAME, slots.acquire)) as (_, port):
            async with raw_client(port) as (reader, writer):
                writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
                             b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n")
                r = await read_response(reader)
                sent = {k for k, _ in json.loads(r.body)["headers"]}
                assert r.status == 200 and not sent & {"upgrade", "connection"}
                assert r.header("connection") == "close"  # llhttp parses nothing after an upgrade request
                assert await reader.read() == b""
            async with raw_client(port) as (reader, writer):
                writer.write(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
                r = await read_response(reader)
                assert r.status == 405 and b"CONNECT" in r.body
        assert slots.acquired == 1 and slots.balanced()

    run(body)


# --- routes and lifetime -----------------------------------------------------------------------------
def test_exchanges_in_flight_finish_on_the_endpoint_they_started_on(sock_dir):
    a, b = os.path.join(sock_dir, "a"), os.path.join(sock_dir, "b")
    slots_a, slots_b = Slots(a), Slots(b)

    async def body():
        async with uvicorn_upstream(a) as state_a, uvicorn_upstream(b), gateway(Endpoint("a", slots_a.acquire)) as (
            gw,
            port,
        ):
            async with client(port) as c1, client(port) as c2:
                slow = asyncio.ensure_future(c1.get("/slow"))
                await until(lambda: slots_a.acquired == 1)
                gw.route(port, Endpoint("b", slots_b.acquire))
                assert (await c2.get("/echo")).status_code == 200
                assert slots_b.acquired == 1 and slots_a.acquired == 1
                state_a.stop.set()
                r = await slow
                assert (r.status_code, r.text) == (200, "late")
        assert slots_a.balanced() and slots_b.balanced()

    run(body)


def test_open_is_idempotent_and_close_port_stops_listening(sock_dir):
    async def body():
        gw = Gateway()
        port = await gw.open()
        assert await gw.open(port) == port
        other = await gw.open()
        assert other != port
        await gw.close_port(port)
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
        async with client(other) as c:
            assert (await c.get("/")).status_code == 404
        await gw.close()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", other)

    run(body)


def test_idle_client_connections_are_closed(sock_dir):
    async def body():
        async with gateway(None) as (gw, port):
            gw.idle_timeout = 0.2
            async with raw_client(port) as (reader, _writer):
                assert await asyncio.wait_for(reader.read(), 10) == b""

    run(body)


def test_close_leaves_no_task_socket_or_server(sock_dir):
    path = os.path.join(sock_dir, "s")
    slots, waiting = Slots(path), Slots(path)
    waiting.gate = asyncio.Event()

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def body():
        async with uvicorn_upstream(path):
            before = open_fds()
            gw = Gateway()
            port = await gw.open()
            waiting_port = await gw.open()
            gw.route(port, Endpoint(NAME, slots.acquire))
            gw.route(waiting_port, Endpoint(NAME, waiting.acquire))
            async with client(port) as c, client(waiting_port) as w:
                assert (await c.get("/echo")).status_code == 200  # leaves a pooled upstream connection
                in_flight = asyncio.ensure_future(c.get("/slow"))
                queued = asyncio.ensure_future(w.get("/"))
                await until(lambda: slots.acquired == 2 and waiting.waiting == 1)
                await gw.close()
                for request in (in_flight, queued):
                    with pytest.raises(httpx.TransportError):
                        await request
            assert not [t for t in asyncio.all_tasks() if "gateway" in repr(t.get_coro())]
            for p in (port, waiting_port):
                with pytest.raises(OSError):
                    await asyncio.open_connection("127.0.0.1", p)
            assert waiting.cancelled == 1 and slots.balanced()
            # The upstream notices the closed connections on its own time.
            await until(lambda: open_fds() == before)

    run(body)


def test_a_request_head_sent_slowly_is_cut_off(sock_dir):
    """Slowloris: a client that keeps a head coming one byte at a time (so never idle) is answered 408
    and its connection closed once the head has taken longer than `head_timeout`."""

    async def body():
        async with gateway(None) as (gw, port):
            gw.head_timeout = 0.5
            gw.idle_timeout = 60.0
            async with raw_client(port) as (reader, writer):
                head = b"GET / HTTP/1.1\r\nhost: x\r\n" + b"x-slow: " + b"a" * 1000
                got = b""
                for byte in head:
                    writer.write(bytes([byte]))
                    try:
                        # One chunk: a cancelled `read()` (to EOF) would drop what it had read so far.
                        got = await asyncio.wait_for(reader.read(65536), 0.05)
                    except asyncio.TimeoutError:
                        continue
                    break
                got += await asyncio.wait_for(reader.read(), 5)
                assert got.startswith(b"HTTP/1.1 408"), got
                assert b"request head not received within 0.5 s" in got

    run(body)
