"""An app of its own, so a test can stop it and look at what the exit hooks did."""

import os
import sys

import modal

app = modal.App("lifecycle")


def _pid() -> int:
    """This container's process as the host sees it (its own PID namespace numbers it 1)."""
    return int(os.environ.get("HOMEPORT_HOST_PID") or os.getpid())


@app.cls()
class Resource:
    log: str = modal.parameter()

    @modal.enter()
    def open(self):
        self.handle = f"handle-{_pid()}"

    @modal.exit()
    def broken(self):
        with open(self.log, "a") as f:
            f.write(f"exit-broken {_pid()}\n")
        raise RuntimeError("exit hook failed on purpose")

    @modal.exit()
    def close(self):
        with open(self.log, "a") as f:
            f.write(f"exit-close {self.handle}\n")
        print(f"closed {self.handle}", file=sys.stderr)

    @modal.method()
    def use(self):
        return _pid(), self.handle


@app.function()
class Counter:
    @modal.enter()
    def setup(self):
        self.processed = 0

    @modal.exit()
    def teardown(self):
        print(f"Counter stopping. Processed {self.processed} items")

    def __call__(self, item):
        self.processed += 1
        return item
