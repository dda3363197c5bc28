"""Web endpoints of every kind, for tests/integration/test_web.py."""

import asyncio
import hashlib
import os
import subprocess
import sys
import time

import modal

app = modal.App("webt")

# A tiny HTTP server of the user's own: answers with the container it runs in, after `?sleep=` seconds.
OWN_SERVER = r"""
import http.server, os, sys, time, urllib.parse
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        time.sleep(float(q.get("sleep", ["0"])[0]))
        body = os.environ["HOMEPORT_CONTAINER_ID"].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
"""


@app.function()
@modal.fastapi_endpoint()
def hello(name: str = "world"):
    return {"hello": name, "container": os.environ["HOMEPORT_CONTAINER_ID"]}


@app.function()
@modal.fastapi_endpoint(method="POST", docs=True)
def echo(item: dict):
    return {"got": item}


@app.function()
@modal.concurrent(max_inputs=8)
@modal.asgi_app()
def api():
    from fastapi import FastAPI, Request, WebSocket
    from fastapi.responses import StreamingResponse

    web = FastAPI()
    started = time.time()

    @web.get("/")
    def root():
        return {"started": started}

    @web.post("/upload")
    async def upload(request: Request):
        digest, size = hashlib.sha256(), 0
        async for chunk in request.stream():
            digest.update(chunk)
            size += len(chunk)
        return {"bytes": size, "sha256": digest.hexdigest()}

    @web.websocket("/ws")
    async def ws(socket: WebSocket):
        await socket.accept()
        async for text in socket.iter_text():
            await socket.send_text(f"echo {text}")

    @web.get("/stream")
    async def stream(flag: str):
        async def chunks():
            yield b"first\n"
            # The client creates `flag` only once it has read the first chunk: the second one can
            # only come if the first reached it while the response was still being produced.
            while not os.path.exists(flag):  # noqa: ASYNC110, ASYNC240 - another process's signal
                await asyncio.sleep(0.01)
            yield b"second\n"

        return StreamingResponse(chunks(), media_type="text/plain")

    return web


@app.function()
@modal.wsgi_app()
def wsgi():
    def application(environ, start_response):
        body = f"wsgi {environ['REQUEST_METHOD']} {environ['PATH_INFO']}".encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return application


@app.function(min_containers=2)
@modal.web_server(8000, startup_timeout=30)
def own_server():
    subprocess.Popen([sys.executable, "-c", OWN_SERVER, "8000"])


@app.function()
@modal.fastapi_endpoint(requires_proxy_auth=True)
def private():
    return "only with credentials"


# The request's limit is 1 s; its container's start-up has its own (else it follows `timeout`, and a
# cold start on a loaded machine would be cut at 1 s, answered 503 before the request could time out).
@app.function(timeout=1, startup_timeout=60)
@modal.fastapi_endpoint()
def slow(seconds: float):
    time.sleep(seconds)
    return "done"


@app.function(max_containers=3)
@modal.fastapi_endpoint()
def one_at_a_time(seconds: float = 1.0):
    time.sleep(seconds)
    return os.environ["HOMEPORT_CONTAINER_ID"]


@app.function()
@modal.asgi_app()
def broken():
    raise RuntimeError("the app factory failed on purpose")


@app.cls()
class Greeter:
    @modal.enter()
    def load(self):
        self.greeting = "hi"

    @modal.fastapi_endpoint()
    def greet(self, name: str):
        return f"{self.greeting} {name}"

    @modal.method()
    def plain(self):
        return self.greeting


@app.function()
@modal.asgi_app()
def client_address():
    from fastapi import FastAPI, Request

    web = FastAPI()

    @web.get("/")
    def root(request: Request):
        return request.client.host

    return web


@app.function()
@modal.asgi_app()
def returns_none():
    return None


@app.function()
@modal.asgi_app()
def lifespan_fails():
    import contextlib

    from fastapi import FastAPI

    @contextlib.asynccontextmanager
    async def lifespan(app):
        raise RuntimeError("no database to connect to")
        yield

    return FastAPI(lifespan=lifespan)


@app.cls(timeout=2, startup_timeout=30)
class SlowStart:
    """Its start-up takes longer than its `timeout`: only the request itself is bounded by that."""

    @modal.enter()
    def load(self):
        time.sleep(3)
        self.loaded = os.environ["HOMEPORT_CONTAINER_ID"]

    @modal.fastapi_endpoint()
    def ready(self):
        return self.loaded
