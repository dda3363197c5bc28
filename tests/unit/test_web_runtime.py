"""A container's web servers (`runtime/_web.py`) in this process: real uvicorn on Unix sockets, with
no control plane, and the check that a `web_server` port is the container's own."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from homeport import _protocol as P
from homeport.runtime import _web
from homeport.runtime._web import WebServers, WebStartError, claim_ports


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


# --- a web_server port without a network of its own --------------------------------------------------
@pytest.fixture
def shared_network(monkeypatch):
    """A container whose backend could not give it a network of its own; its holds are let go after."""
    monkeypatch.delenv(P.ENV_PRIVATE_NETWORK, raising=False)
    yield
    while _web._claims:
        _web._claims.popitem()[1].close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server(port: int) -> list[dict]:
    return [{"type": "fastapi_endpoint"}, {"type": "web_server", "port": port}]


def test_a_port_another_program_listens_on_fails_the_start(shared_network):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(WebStartError, match=rf"port {port} is not free: another program .* Install bubblewrap"):
            claim_ports(_server(port))
        assert not _web._claims
        claim_ports(_server(port), server_started=True)  # a server class's own server, started by its hooks
        assert port in _web._claims


def test_a_replica_of_the_same_port_fails_its_start_while_the_first_lives(shared_network):
    port = _free_port()
    claim_ports(_server(port))
    claim_ports(_server(port))  # the same container asking again (its start, then its server's)
    first = _web._claims.pop(port)  # as if it were another container's
    try:
        with pytest.raises(WebStartError, match=rf"port {port} is not free: another container on this machine"):
            claim_ports(_server(port), server_started=True)
    finally:
        first.close()
    claim_ports(_server(port))  # free again once that container is gone
    assert port in _web._claims


def test_a_container_with_its_own_network_claims_nothing(shared_network, monkeypatch):
    monkeypatch.setenv(P.ENV_PRIVATE_NETWORK, "1")
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        claim_ports(_server(other.getsockname()[1]))  # on the host: not the container's network
    assert not _web._claims
