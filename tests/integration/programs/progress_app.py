"""Long work for the progress displays: an image step to build, and a map of a few hundred inputs."""

import os

import modal

# A new value each run gives an image layer that is not cached yet, so the build really runs.
image = modal.Image.debian_slim().env({"HP_PROGRESS_NONCE": os.environ.get("HP_PROGRESS_NONCE", "0")})

app = modal.App("progress-app")


@app.function(image=image)
def square(x: int) -> int:
    return x * x


@app.local_entrypoint()
def main(n: int = 300):
    print("total", sum(square.map(range(n))))
