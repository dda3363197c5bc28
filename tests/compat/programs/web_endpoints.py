"""Every web decorator: fastapi_endpoint (GET and POST), asgi_app, wsgi_app, web_server, a class web
method, and Function.get_web_url() inside a container (a function calls another's endpoint)."""

import json
import subprocess
import urllib.request

import modal

# Modal's docs add `.pip_install("fastapi[standard]")`; Homeport serves web endpoints with its own FastAPI,
# and the image build (a download) is covered by images.py.
app = modal.App("compat-web")


@app.function()
@modal.fastapi_endpoint()
def hello(name: str = "world"):
    return {"hello": name}


@app.function()
@modal.fastapi_endpoint(method="POST")
def echo(item: dict):
    return {"got": item}


@app.function()
@modal.asgi_app()
def fastapi_app():
    from fastapi import FastAPI

    web = FastAPI()

    @web.get("/items/{n}")
    def item(n: int):
        return {"n": n}

    return web


@app.function()
@modal.wsgi_app()
def flask_like():
    def wsgi(environ, start_response):
        start_response("200 OK", [("content-type", "text/plain")])
        return [f"wsgi {environ['PATH_INFO']}".encode()]

    return wsgi


@app.function()
@modal.web_server(8000, startup_timeout=30)
def files():
    subprocess.Popen(["python", "-m", "http.server", "8000"], cwd="/")


@app.cls()
class Api:
    @modal.fastapi_endpoint()
    def status(self):
        return {"ok": True}


@app.function()
def call_hello() -> dict:
    url = hello.get_web_url()
    with urllib.request.urlopen(url + "?name=inside", timeout=30) as r:
        return json.load(r)


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as r:
        assert r.status == 200
        return r.read()


def check() -> None:
    assert json.loads(get(hello.get_web_url() + "?name=modal")) == {"hello": "modal"}
    req = urllib.request.Request(echo.get_web_url(), data=json.dumps({"a": 1}).encode(),
                                 headers={"content-type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=60) as r:
        assert json.load(r) == {"got": {"a": 1}}
    assert json.loads(get(fastapi_app.get_web_url() + "/items/7")) == {"n": 7}
    assert get(flask_like.get_web_url() + "/x") == b"wsgi /x"
    assert b"Directory listing" in get(files.get_web_url())
    assert json.loads(get(Api().status.get_web_url())) == {"ok": True}
    assert call_hello.remote() == {"hello": "inside"}
    print("COMPAT OK web_endpoints")


@app.local_entrypoint()
def main():
    check()


if __name__ == "__main__":
    with app.run():
        check()
