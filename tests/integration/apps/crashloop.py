"""A warm pool whose enter hook always fails: it must back off, and say why once."""

import modal

app = modal.App("crashloop")


@app.cls(min_containers=1)
class CrashingEnter:
    @modal.enter()
    def connect(self):
        raise ConnectionRefusedError("the database is down")

    @modal.method()
    def f(self):
        return "never"
