"""Best-effort session affinity for `@app.server`: requests with the same `Modal-Session-ID` header go to
the same replica while the replicas stay the same."""

import subprocess
import tempfile
import time
import urllib.request
import uuid

import modal

app = modal.App("compat-sessions")


@app.server(port=8000, unauthenticated=True, min_containers=2, max_containers=2, max_concurrency=4)
class Replica:
    @modal.enter()
    def start(self):
        root = tempfile.mkdtemp()
        with open(f"{root}/index.html", "w") as f:
            f.write(uuid.uuid4().hex)  # which replica answered
        self.proc = subprocess.Popen(["python", "-m", "http.server", "8000", "--directory", root])


def replica_for(url: str, session: str) -> str:
    req = urllib.request.Request(url, headers={"Modal-Session-ID": session})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read().decode()


def check() -> None:
    url = Replica.get_url()
    sessions = [f"session-{i}" for i in range(16)]
    deadline = time.monotonic() + 60
    seen: set[str] = set()
    while len(seen) < 2 and time.monotonic() < deadline:  # until both replicas serve
        seen |= {replica_for(url, s) for s in sessions}
        time.sleep(0.2)
    assert len(seen) == 2, seen
    for s in sessions:
        answers = {replica_for(url, s) for _ in range(4)}
        assert len(answers) == 1, (s, answers)
    print("COMPAT OK sessions")


@app.local_entrypoint()
def main():
    check()


if __name__ == "__main__":
    with app.run():
        check()
