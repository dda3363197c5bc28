"""Web endpoints through the control plane's gateway, with real HTTP clients."""

import concurrent.futures
import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import httpx
import pytest

from homeport import _protocol as P
from homeport._bridge import run_sync
from homeport._client import get_client
from homeport.testing import app_fixture, homeport_cli, wait_for

pytestmark = pytest.mark.integration


web = app_fixture("web")


def _containers(function: str) -> list[dict]:
    async def ls():
        return await (await get_client()).request({"t": P.CONTAINER_LIST})

    return [c for c in run_sync(ls()) if c["function"] == function and c["state"] != "stopping"]


def test_fastapi_endpoint_get_and_post(web):
    url = web.hello.web_url
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url) and web.hello.get_web_url() == url
    r = httpx.get(url, params={"name": "ann"}, headers={"Origin": "http://example.com"}, timeout=30)
    assert r.status_code == 200 and r.json()["hello"] == "ann"
    assert r.headers["access-control-allow-origin"] in ("*", "http://example.com")  # Modal's CORS policy
    # The next request is served by the same warm container.
    assert httpx.get(url, timeout=30).json()["container"] == r.json()["container"]
    r = httpx.post(web.echo.web_url, json={"a": [1, 2]}, timeout=30)
    assert r.status_code == 200 and r.json() == {"got": {"a": [1, 2]}}
    assert httpx.get(web.echo.web_url + "/docs", timeout=30).status_code == 200  # docs=True
    assert httpx.get(url + "/docs", timeout=30).status_code == 404  # no docs by default


def test_web_functions_are_not_called_with_remote(web):
    from homeport.exception import InvalidError

    with pytest.raises(InvalidError, match=re.escape(f"via its web url '{web.hello.web_url}'")):
        web.hello.remote()
    # Nor past the SDK's check: the control plane itself refuses calls of web endpoints (which would
    # skip their `requires_proxy_auth`), for plain, spawned and mapped calls alike.
    private = web.private
    private._check_not_web = lambda how: None
    try:
        for call in (private.remote, lambda: private.spawn().get(timeout=30), lambda: list(private.map([()]))):
            with pytest.raises(InvalidError, match="served over HTTP only"):
                call()
    finally:
        del private._check_not_web


def test_asgi_app_streams_responses_as_they_are_produced(web, tmp_path):
    flag = tmp_path / "first-chunk-read"
    with httpx.stream("GET", web.api.web_url + "/stream", params={"flag": str(flag)}, timeout=30) as r:
        lines = r.iter_lines()
        assert next(lines) == "first"
        flag.touch()  # only now may the server produce the second chunk
        assert next(lines) == "second"


def test_websockets_pass_through_the_gateway(web):
    from websockets.sync.client import connect

    with connect(web.api.web_url.replace("http://", "ws://") + "/ws", open_timeout=30) as socket:
        for text in ("one", "two"):
            socket.send(text)
            assert socket.recv(timeout=30) == f"echo {text}"


def test_request_bodies_of_100_mb_pass(web):
    size, piece = 100 * 1024 * 1024, os.urandom(1 << 20)
    digest = hashlib.sha256()
    for _ in range(size // len(piece)):
        digest.update(piece)

    def body():
        for _ in range(size // len(piece)):
            yield piece

    r = httpx.post(web.api.web_url + "/upload", content=body(), timeout=120)
    assert r.status_code == 200, r.text
    assert r.json() == {"bytes": size, "sha256": digest.hexdigest()}


def test_wsgi_app(web):
    r = httpx.post(web.wsgi.web_url + "/some/path", timeout=30)
    assert r.status_code == 200 and r.text == "wsgi POST /some/path"


def test_web_server_replicas_listen_on_the_same_port(web):
    url = web.own_server.web_url
    assert wait_for(lambda: len([c for c in _containers("own_server") if c["state"] == "ready"]) == 2, timeout=60)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: httpx.get(url, params={"sleep": "1"}, timeout=60), range(4)))
    assert all(r.status_code == 200 for r in replies)
    # Several containers, each with its own network and a server on port 8000, all answering.
    assert len({r.text for r in replies}) >= 2


def test_requires_proxy_auth(web):
    url = web.private.web_url
    r = httpx.get(url, timeout=30)
    assert r.status_code == 401 and "Modal-Key" in r.text
    out = homeport_cli("proxy-token", "create")
    assert out.returncode == 0, out.stderr
    key = re.search(r"Token id:\s+(\S+)", out.stdout).group(1)
    secret = re.search(r"Token secret:\s+(\S+)", out.stdout).group(1)
    assert httpx.get(url, headers={"Modal-Key": key, "Modal-Secret": "ws-wrong"}, timeout=30).status_code == 401
    r = httpx.get(url, headers={"Modal-Key": key, "Modal-Secret": secret}, timeout=30)
    assert r.status_code == 200 and r.json() == "only with credentials"
    listed = homeport_cli("proxy-token", "list", "--json")
    assert key in listed.stdout and secret not in listed.stdout
    assert homeport_cli("proxy-token", "delete", key).returncode == 0
    assert httpx.get(url, headers={"Modal-Key": key, "Modal-Secret": secret}, timeout=30).status_code == 401


def test_a_request_past_the_timeout_gets_504(web):
    r = httpx.get(web.slow.web_url, params={"seconds": 10}, timeout=60)
    assert r.status_code == 504 and "timeout" in r.text.lower()
    assert httpx.get(web.slow.web_url, params={"seconds": 0}, timeout=30).json() == "done"


def test_concurrent_requests_scale_out_containers(web):
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        replies = list(pool.map(lambda _: httpx.get(web.one_at_a_time.web_url, params={"seconds": 2}, timeout=60),
                                range(3)))
    assert all(r.status_code == 200 for r in replies)
    # One request at a time per container (no @modal.concurrent): three at once need three containers.
    assert len({r.json() for r in replies}) == 3


def test_an_app_that_fails_to_start_answers_with_the_error(web):
    r = httpx.get(web.broken.web_url, timeout=60)
    assert r.status_code == 503 and "the app factory failed on purpose" in r.text
    assert "Traceback" not in r.text  # what failed, not the code's insides (those are in the app's log)
    httpx.get(web.broken.web_url, timeout=60)  # the second start fails too: the pool is crash-looping
    # Now requests are answered at once with why, instead of waiting out the restart back-off.
    r = httpx.get(web.broken.web_url, timeout=60)
    assert r.status_code == 503 and "cannot start" in r.text and "failed on purpose" in r.text


def test_an_app_factory_or_lifespan_that_fails_answers_with_why(web):
    r = httpx.get(web.returns_none.web_url, timeout=60)
    assert r.status_code == 503 and "'returns_none' returned NoneType (None), not an ASGI app" in r.text
    r = httpx.get(web.lifespan_fails.web_url, timeout=60)
    assert r.status_code == 503 and "RuntimeError('no database to connect to')" in r.text, r.text


def test_the_client_address_is_the_clients(web):
    # From another loopback address than the gateway's own, to tell the client from the gateway.
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=30) as c:
        r = c.get(web.client_address.web_url)
    assert r.status_code == 200 and r.json() == "127.0.0.2"


def test_a_cold_start_longer_than_the_timeout_is_not_a_timeout(web):
    assert not _containers("SlowStart")  # the first request starts the first container
    r = httpx.get(web.SlowStart().ready.web_url, timeout=60)
    assert r.status_code == 200 and r.json().startswith("ta-")


def test_class_web_endpoints_share_the_container_state(web):
    url = web.Greeter().greet.web_url
    assert url and httpx.get(url, params={"name": "bo"}, timeout=30).json() == "hi bo"
    assert web.Greeter().plain.remote() == "hi"


def test_a_server_class_serves_what_its_enter_hook_starts_until_its_exit_hook_stops_it(platform, apps_path, tmp_path):
    os.environ["WEB_SERVER_MARKER"] = str(tmp_path / "marker")
    try:
        sys.modules.pop("web_server_class", None)
        import web_server_class
    finally:
        os.environ.pop("WEB_SERVER_MARKER")
    with web_server_class.app.run(show_logs=False):
        url = web_server_class.MyServer.get_url()
        r = httpx.get(url, timeout=60)
        assert r.status_code == 200 and "Directory listing" in r.text
    # The exit hook stopped the server and wrote the marker when the app ended.
    assert (tmp_path / "marker").read_text().startswith("stopped ")
    r = httpx.get(url, timeout=30)
    assert r.status_code == 404 and "was stopped" in r.text


def test_deployed_endpoints_survive_a_control_plane_restart(platform, tmp_path):
    program = tmp_path / "webdep.py"
    source = textwrap.dedent("""
        import time
        import modal
        app = modal.App("webdep")

        @app.function()
        @modal.concurrent(max_inputs=4)
        @modal.fastapi_endpoint()
        def ping(sleep: float = 0):
            time.sleep(sleep)
            return "version 1"
    """)
    program.write_text(source)
    out = homeport_cli("deploy", str(program))
    assert out.returncode == 0, out.stderr
    url = re.search(r"ping => (http://\S+)", out.stdout).group(1)
    assert httpx.get(url, timeout=60).json() == "version 1"
    import modal

    assert modal.Function.from_name("webdep", "ping").get_web_url() == url
    # A redeploy takes over the same URL; a request in flight finishes on the old version.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(httpx.get, url, params={"sleep": 3}, timeout=60)
        assert wait_for(lambda: any(c["running"] for c in _containers("ping")), timeout=30)
        program.write_text(source.replace("version 1", "version 2"))
        out = homeport_cli("deploy", str(program))
        assert out.returncode == 0, out.stderr
        assert re.search(r"ping => (http://\S+)", out.stdout).group(1) == url
        assert httpx.get(url, timeout=60).json() == "version 2"
        assert in_flight.result().json() == "version 1"
    platform.restart()
    assert httpx.get(url, timeout=60).json() == "version 2"  # the same URL, served again after the restart
    assert homeport_cli("app", "stop", "webdep").returncode == 0
    r = httpx.get(url, timeout=30)
    assert r.status_code == 404 and "was stopped" in r.text


@contextlib.contextmanager
def _serving(program: Path, *args: str):
    """`homeport serve program` in a subprocess: yields (process, the endpoint's URL) once it serves."""
    proc = subprocess.Popen([sys.executable, "-m", "homeport.cli", "serve", str(program), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        assert wait_for(lambda: any("Serving" in line for line in lines), timeout=120), "".join(lines)
        yield proc, next(m.group(1) for line in lines if (m := re.search(r"page => (http://\S+)", line)))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
        reader.join(10)
        proc.stdout.close()
        assert proc.returncode in (0, -signal.SIGKILL), "".join(lines)


_PAGE = textwrap.dedent("""
    import modal
    app = modal.App("served")

    @app.function()
    @modal.fastapi_endpoint()
    def page():
        return "version 1"
""")


def test_serve_reloads_when_the_source_changes(platform, tmp_path):
    program = tmp_path / "served.py"
    program.write_text(_PAGE)
    with _serving(program, "--timeout", "120") as (_proc, url):
        assert httpx.get(url, timeout=60).json() == "version 1"
        program.write_text(_PAGE.replace("version 1", "version 2"))
        assert wait_for(lambda: httpx.get(url, timeout=30).text == '"version 2"', timeout=60)
    assert wait_for(lambda: httpx.get(url, timeout=30).status_code == 404, timeout=30)


def test_serve_children_end_with_it(platform, tmp_path):
    program = tmp_path / "orphan.py"
    program.write_text(_PAGE.replace('App("served")', 'App("orphan")'))
    with _serving(program) as (proc, url):
        assert httpx.get(url, timeout=60).json() == "version 1"
        proc.kill()  # `homeport serve` dies without a chance to stop its child: the child stops itself
        proc.wait(30)
        assert wait_for(lambda: httpx.get(url, timeout=30).status_code == 404, timeout=60)


def _deploy_source(tmp_path, name: str, body: str) -> tuple[Path, str]:
    program = tmp_path / f"{name}.py"
    program.write_text(textwrap.dedent(body))
    out = homeport_cli("deploy", str(program))
    assert out.returncode == 0, out.stderr
    return program, re.search(r"=> (http://\S+)", out.stdout).group(1)


def test_a_deployed_app_runs_the_code_it_was_deployed_with(platform, tmp_path):
    program, url = _deploy_source(tmp_path, "pinned", """
        import os
        import modal
        app = modal.App("pinned")

        @app.function()
        @modal.fastapi_endpoint()
        def which():
            return {"code": "deployed", "container": os.environ["HOMEPORT_CONTAINER_ID"]}
    """)
    first = httpx.get(url, timeout=60).json()
    assert first["code"] == "deployed"
    program.write_text(program.read_text().replace('"deployed"', '"edited, not deployed"'))
    out = homeport_cli("container", "stop", first["container"])
    assert out.returncode == 0, out.stderr
    assert wait_for(lambda: not any(c["container_id"] == first["container"] for c in _containers("which")), timeout=30)
    program.unlink()
    again = httpx.get(url, timeout=60).json()  # a new container, with the file edited and then gone
    assert again["container"] != first["container"] and again["code"] == "deployed"
    assert homeport_cli("app", "stop", "pinned").returncode == 0


def test_url_labels_belong_to_one_app(platform, tmp_path):
    _program, url = _deploy_source(tmp_path, "owner", """
        import modal
        app = modal.App("owner")

        @app.function()
        @modal.fastapi_endpoint(label="shared-label")
        def mine():
            return "owner"
    """)
    thief = tmp_path / "thief.py"
    thief.write_text(textwrap.dedent("""
        import modal
        app = modal.App("thief")

        @app.function()
        @modal.fastapi_endpoint(label="shared-label")
        def theirs():
            return "thief"
    """))
    out = homeport_cli("deploy", str(thief))
    assert out.returncode != 0 and "in use by web endpoint 'mine' of app 'owner'" in out.stderr + out.stdout
    assert httpx.get(url, timeout=60).json() == "owner"  # untouched
    twice = tmp_path / "twice.py"
    twice.write_text(textwrap.dedent("""
        import modal
        app = modal.App("twice")

        @app.function()
        @modal.fastapi_endpoint(label="same")
        def a():
            return 1

        @app.function()
        @modal.fastapi_endpoint(label="same")
        def b():
            return 2
    """))
    out = homeport_cli("deploy", str(twice))
    assert out.returncode != 0 and "would share the URL label 'same'" in out.stderr + out.stdout
    assert homeport_cli("app", "stop", "owner").returncode == 0


def test_a_deployed_classes_web_method_is_found_by_name(platform, tmp_path):
    program = tmp_path / "webcls.py"
    program.write_text(textwrap.dedent("""
        import modal
        app = modal.App("webcls")

        @app.cls()
        class C:
            @modal.fastapi_endpoint()
            def web(self):
                return "from the class"

            @modal.method()
            def plain(self):
                return 1
    """))
    out = homeport_cli("deploy", str(program))
    assert out.returncode == 0, out.stderr
    try:
        url = re.search(r"C\.web => (http://\S+)", out.stdout + out.stderr).group(1)
        import modal

        from homeport.exception import InvalidError

        obj = modal.Cls.from_name("webcls", "C")()
        assert obj.plain.remote() == 1
        with pytest.raises(InvalidError, match="webhook function cannot be invoked"):
            obj.web.remote()
        assert obj.web.get_web_url() == obj.web.web_url == url
        assert httpx.get(url, timeout=60).json() == "from the class"
    finally:
        assert homeport_cli("app", "stop", "webcls").returncode == 0
