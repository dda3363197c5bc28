"""The seed's server class (../shared/seeds/002): an enter hook starts `python3 -m http.server 8000`."""

import os
import subprocess

import modal

app = modal.App("seedsrv")
MARKER = os.environ.get("WEB_SEED_MARKER", "/tmp/homeport-web-seed-marker")


@app._experimental_server(port=8000, proxy_regions=["us-east"],
                          secrets=[modal.Secret.from_dict({"WEB_SEED_MARKER": MARKER})])
class MyServer:
    @modal.enter()
    def start(self):
        # Start HTTP server subprocess
        self.proc = subprocess.Popen(["python3", "-m", "http.server", "8000"])
        print("HTTP server started")

    @modal.exit()
    def stop(self):
        # Gracefully stop the server
        self.proc.terminate()
        self.proc.wait(timeout=10)
        print("HTTP server stopped")
        with open(os.environ["WEB_SEED_MARKER"], "a") as f:
            f.write(f"stopped {os.environ['HOMEPORT_CONTAINER_ID']}\n")
