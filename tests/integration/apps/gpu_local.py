"""A function that asks for a GPU, on a control plane whose backend cannot place GPUs."""

import modal

app = modal.App("gpu-local")


@app.function(gpu="T4")
def on_gpu() -> int:
    return 1
