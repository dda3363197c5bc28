"""`homeport run -d`: Ctrl-C ends the client; the app, and the call it made, keep running."""

import os
import time

import modal

app = modal.App("detach-app")
vol = modal.Volume.from_name("detach-app-vol", create_if_missing=True)


@app.function(volumes={"/data": vol}, timeout=120)
def work() -> str:
    print("work started")
    deadline = time.monotonic() + 100
    while not os.path.exists("/data/gate") and time.monotonic() < deadline:  # the test puts it there
        time.sleep(0.1)
        vol.reload()
    with open("/data/finished", "w") as f:
        f.write("yes")
    vol.commit()
    return "done"


@app.local_entrypoint()
def main():
    print("result", work.remote())
