"""A server class whose enter hook starts `python3 -m http.server 8000` and whose exit hook stops it,
noting that it did in the file `WEB_SERVER_MARKER` names."""

import os
import subprocess

import modal

app = modal.App("httpsrv")
MARKER = os.environ.get("WEB_SERVER_MARKER", "/tmp/homeport-web-server-marker")


@app._experimental_server(port=8000, proxy_regions=["us-east"],
                          secrets=[modal.Secret.from_dict({"WEB_SERVER_MARKER": MARKER})])
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
        with open(os.environ["WEB_SERVER_MARKER"], "a") as f:
            f.write(f"stopped {os.environ['HOMEPORT_CONTAINER_ID']}\n")
