"""`@app.server`: a class whose enter hook starts an HTTP server; Server.get_url(); authentication
by default (unauthenticated=True opens it)."""

import subprocess
import urllib.error
import urllib.request

import modal

app = modal.App("compat-servers")


@app.server(port=8000, unauthenticated=True, startup_timeout=30)
class FileServer:
    @modal.enter()
    def start(self):
        self.proc = subprocess.Popen(["python", "-m", "http.server", "8000"], cwd="/")

    @modal.exit()
    def stop(self):
        self.proc.terminate()


@app.server(port=8001)
class Private:
    @modal.enter()
    def start(self):
        self.proc = subprocess.Popen(["python", "-m", "http.server", "8001"], cwd="/")


def check() -> None:
    url = FileServer.get_url()
    with urllib.request.urlopen(url, timeout=60) as r:
        assert r.status == 200 and b"Directory listing" in r.read()
    try:
        urllib.request.urlopen(Private.get_url(), timeout=60)
        raise AssertionError("an authenticated server answered without credentials")
    except urllib.error.HTTPError as e:
        assert e.code == 401, e.code
    print("COMPAT OK servers")


@app.local_entrypoint()
def main():
    check()


if __name__ == "__main__":
    with app.run():
        check()
