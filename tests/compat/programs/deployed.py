"""A deployed app (`modal deploy deployed.py`), called by name from another plain `python` script."""

import subprocess

import modal

app = modal.App("compat-deployed")


@app.function()
def shout(text: str) -> str:
    return text.upper() + "!"


@app.server(port=8000, unauthenticated=True)
class Site:
    @modal.enter()
    def start(self):
        self.proc = subprocess.Popen(["python", "-m", "http.server", "8000"], cwd="/")
