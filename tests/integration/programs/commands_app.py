"""For the CLI commands a Modal user reaches for: a function, a class, and a volume a container writes into
(including symlinks that point out of it, as hostile code would plant)."""

import os

import modal

app = modal.App("commands-app")
vol = modal.Volume.from_name("commands-vol", create_if_missing=True)

VERSION = "one"


@app.function(volumes={"/data": vol})
def plant() -> str:
    os.makedirs("/data/dir", exist_ok=True)
    with open("/data/dir/file.txt", "w") as f:
        f.write("inside")
    for name, target in (("evil", "/etc/passwd"), ("escape", "/etc")):
        if not os.path.lexists(f"/data/{name}"):
            os.symlink(target, f"/data/{name}")
    vol.commit()
    return VERSION


@app.cls()
class Greeter:
    @modal.method()
    def hello(self) -> str:
        return "hi"
