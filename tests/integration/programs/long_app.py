"""A call that runs until the control plane is stopped under it."""

import time

import modal

app = modal.App("long-app")


@app.function(timeout=300)
def slow():
    print("slow started")
    time.sleep(120)


@app.local_entrypoint()
def main():
    slow.remote()
