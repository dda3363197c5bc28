"""A trivial function in an image with its own root file system (`run_commands`): bench/run.py's
rootfs_cold_start."""

import modal

app = modal.App("bench-rootfs", image=modal.Image.debian_slim().run_commands("true"))


@app.function()
def trivial(x=0):
    return x
