"""`modal.forward`: a function serves HTTP on a port of its container and exposes it with a tunnel while
the `with` block lasts; the caller reaches it at `tunnel.url`."""

import http.server
import threading
import time
import urllib.error
import urllib.request

import modal

app = modal.App("compat-tunnels")


@app.function(timeout=120)
def serve_through_tunnel():
    seen = threading.Event()

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"hello from {self.path}".encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            if self.path == "/ack":  # the caller has read its answers: the tunnel may close now
                seen.set()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    with modal.forward(port) as tunnel:
        try:
            with modal.forward(port):
                pass
            yield "forwarded twice!"
        except modal.exception.InvalidError:
            pass
        yield tunnel.url
        yield "seen" if seen.wait(60) else "not seen"
    server.shutdown()
    yield "closed"


def check() -> None:
    try:
        with modal.forward(8000):
            pass
        raise AssertionError("modal.forward worked outside a container")
    except modal.exception.InvalidError:
        pass
    events = serve_through_tunnel.remote_gen()
    url = next(events)
    assert url.startswith("http://127.0.0.1:"), url
    with urllib.request.urlopen(url + "/tunnel", timeout=30) as r:
        assert r.read() == b"hello from /tunnel"
    try:  # the function leaves its `with modal.forward(...)` block once this arrives, maybe cutting its answer
        urllib.request.urlopen(url + "/ack", timeout=30).close()
    except (urllib.error.URLError, ConnectionError):
        pass
    assert next(events) == "seen"
    assert next(events) == "closed"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the tunnel ends with the `with` block
        try:
            urllib.request.urlopen(url, timeout=5).close()
        except (urllib.error.URLError, ConnectionError):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the tunnel still answers after the `with` block ended")
    print("COMPAT OK tunnels")


@app.local_entrypoint()
def main():
    check()


if __name__ == "__main__":
    with app.run():
        check()
