"""`import modal` in a function's child process, and modal.is_local() there (True, as Modal's)."""

import subprocess
import sys

import modal

app = modal.App("compat-subprocesses")

CHILD = "import modal, modal.exception, modal.functions; print(modal.is_local(), modal.App.__name__)"


@app.function()
def spawn_child() -> tuple[bool, str]:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
    return modal.is_local(), out.stdout.strip()


@app.local_entrypoint()
def main():
    assert spawn_child.remote() == (False, "True App")
    print("COMPAT OK subprocesses")


if __name__ == "__main__":
    with app.run():
        main()
