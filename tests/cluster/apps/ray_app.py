"""An app whose functions ask for regions; run on a Ray cluster whose nodes carry region labels."""

import os
import sys
import time

import modal

app = modal.App("on-ray")


def node() -> str:
    return os.environ.get("HOMEPORT_NODE_ID", "")


@app.function(region="eu")
def in_europe() -> str:
    return node()


@app.function(region=["us-east-1", "ap-south-1"])
def in_us_east() -> str:
    return node()


@app.function(region="ap-south")
def nowhere() -> str:
    return node()


@app.function()
def square(x: int) -> int:
    return x * x


@app.function()
def countdown(n: int):
    yield from range(n, 0, -1)


@app.function(retries=3)
def slow_square(x: int) -> tuple[int, str]:
    time.sleep(0.05)
    return x * x, node()


@app.cls()
class Greeter:
    @modal.enter()
    def load(self):
        self.greeting = "hello from " + node()[:8]

    @modal.method()
    def greet(self, name: str) -> str:
        return f"{self.greeting}, {name}"


@app.function()
def address() -> str:
    return os.environ["HOMEPORT_SERVER_ADDRESS"]


@app.function()
def calls_another(x: int) -> tuple[int, list[int]]:
    """A function calling another from inside its container: `.remote()` and `.map()` over TCP."""
    return square.remote(x), list(square.map(range(x)))


@app.function(region="us-west", cpu=0.5, max_containers=2)
def survivor(x: int) -> tuple[int, str, int]:
    """One container per us-west node (each has one core, some of it maybe taken by other functions'
    containers): a map keeps both busy."""
    time.sleep(0.1)
    return x * x, node(), os.getpid()


vol = modal.Volume.from_name("ray-shared", create_if_missing=True)
other = modal.Volume.from_name("ray-other", create_if_missing=True)


@app.function(volumes={"/data": vol}, region="eu")
def write(name: str, text: str) -> None:
    with open(f"/data/{name}", "w") as f:
        f.write(text)
    vol.commit()


@app.function(volumes={"/data": vol}, region="us-east-1")
def read(name: str) -> str:
    vol.reload()
    with open(f"/data/{name}") as f:
        return f.read()


@app.function(volumes={"/data": vol})
def peek(path: str) -> list[str] | str:
    """Hostile: what a container sees of the shared root on the host (other volumes live there)."""
    try:
        return sorted(os.listdir(path))
    except OSError as exc:
        return type(exc).__name__


@app.function(gpu="H100")
def on_gpu() -> tuple[str, str]:
    return node(), os.environ.get("CUDA_VISIBLE_DEVICES", "")


@app.function(gpu="A100")
def on_a100() -> str:
    return node()


marked = modal.Image.debian_slim().env({"HOMEPORT_IMAGE_MARK": "built on its node"})


@app.function(image=marked, region="eu")
def image_home() -> tuple[str, str, str, str]:
    """Where this container's image environment is: its node builds it in its own cache."""
    return node(), os.environ.get("VIRTUAL_ENV", ""), sys.executable, os.environ.get("HOMEPORT_IMAGE_MARK", "")


together_seen = modal.Dict.from_name("ray-together", create_if_missing=True)


@app.function(region="sa-east", cpu=1.0)
def together(x: int, k: int) -> int:
    """Each input (one per container, a core each) waits until `k` of them run at once (or a minute
    passed): how many did."""
    together_seen.put(x, os.getpid())
    deadline = time.monotonic() + 60
    while together_seen.len() < k and time.monotonic() < deadline:
        time.sleep(0.1)
    return together_seen.len()


@app.function(min_containers=1)
@modal.fastapi_endpoint()
def web_where() -> dict:
    """A web endpoint: served through the gateway's Unix socket, so on the control plane's node."""
    return {"node": node()}


@app.function(image=marked, region="eu")
def poison_image() -> str:
    """Hostile: change the image environment that the node's other containers run."""
    try:
        with open(os.path.join(os.environ["VIRTUAL_ENV"], "poisoned"), "w") as f:
            f.write("x")
    except OSError as exc:
        return type(exc).__name__
    return "written"
