"""A container's web servers (`runtime/_web.py`) in this process: real uvicorn on Unix sockets, with
no control plane."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from homeport.runtime import _web
from homeport.runtime._web import WebServers, WebStartError


class Service:
    """What `WebServers` reads of a loaded function: its callable."""

    def __init__(self, fn) -> None:
        self.callables = {None: fn}
        self.instance = None


@contextlib.contextmanager
def serving(fn, kind: str) -> Iterator[httpx.Client]:
    """The function's endpoint served as a container serves it; a client of its Unix socket."""
    prefix = os.path.join(tempfile.mkdtemp(prefix="hpw"), "c")  # short: a socket path has ~100 bytes
    servers = WebServers("f", [{"type": kind}], prefix, max_inputs=1)
    try:
        servers.start(Service(fn), {})
        with httpx.Client(transport=httpx.HTTPTransport(uds=_web.socket_path(prefix, 0)),
                          base_url="http://endpoint", timeout=20) as c:
            yield c
    finally:
        servers.stop()
        if servers._thread is not None:
            servers._thread.join(10)
            assert not servers._thread.is_alive()
        with contextlib.suppress(OSError):
            os.unlink(_web.socket_path(prefix, 0))
        os.rmdir(os.path.dirname(prefix))


def test_the_client_address_is_the_one_the_gateway_forwards():
    async def whoami(request: Request) -> JSONResponse:
        return JSONResponse({"host": request.client.host if request.client else None, "scheme": request.url.scheme})

    with serving(lambda: Starlette(routes=[Route("/", whoami)]), "asgi_app") as c:
        r = c.get("/", headers={"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"})
        assert r.json() == {"host": "203.0.113.7", "scheme": "https"}

    def application(environ, start_response):
        body = environ["REMOTE_ADDR"].encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    with serving(lambda: application, "wsgi_app") as c:
        assert c.get("/", headers={"X-Forwarded-For": "203.0.113.8"}).text == "203.0.113.8"


@pytest.mark.parametrize(("kind", "protocol"), [("asgi_app", "ASGI"), ("wsgi_app", "WSGI")])
def test_an_app_factory_that_returns_no_app_fails_the_start(kind, protocol):
    with pytest.raises(WebStartError, match=rf"`@modal.{kind}\(\)` function 'f' returned NoneType \(None\), "
                                            rf"not an {protocol} app"), serving(lambda: None, kind):
        pass


def test_a_lifespan_start_up_failure_is_the_users_own_exception():
    @contextlib.asynccontextmanager
    async def lifespan(app):
        raise RuntimeError("no database")
        yield

    with pytest.raises(WebStartError, match=r"lifespan start-up raised RuntimeError\('no database'\)") as info, \
            serving(lambda: Starlette(lifespan=lifespan), "asgi_app"):
        pass
    assert isinstance(info.value.__cause__, RuntimeError)  # its traceback goes with the error


def test_an_app_without_lifespan_support_still_starts():
    async def app(scope, receive, send):
        if scope["type"] != "http":
            raise RuntimeError("only HTTP")
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    with serving(lambda: app, "asgi_app") as c:
        assert c.get("/").text == "ok"
