"""An image with its own Debian root file system: apt_install, run_commands, run_function."""

import os
import shutil
import subprocess

import modal

HERE = os.path.dirname(os.path.abspath(__file__))


def download() -> None:
    """A build step whose file lands outside the Python environment: it persists in the image."""
    os.makedirs("/opt/models", exist_ok=True)
    with open("/opt/models/weights.txt", "w") as f:
        f.write("weights from run_function")


image = (
    modal.Image.debian_slim()
    .apt_install("tree")
    .run_commands("echo built by run_commands > /etc/hp-marker", "mkdir -p /srv/app")
    .run_function(download)
    .workdir("/srv/app")
    .add_local_file(os.path.join(HERE, "images_rootfs.py"), "/srv/app/source.py")
)
app = modal.App("images-rootfs", image=image)


@app.function()
def inspect() -> dict:
    tree = shutil.which("tree")
    with open("/etc/hp-marker") as f:
        marker = f.read().strip()
    with open("/opt/models/weights.txt") as f:
        weights = f.read()
    earlier = os.path.exists("/etc/hp-scratch-write")  # written by another container, if roots were shared
    with open("/etc/hp-scratch-write", "w") as f:  # the container's root is writable, and its own
        f.write("x")
    return {
        "tree": tree,
        "tree_version": subprocess.run([tree, "--version"], capture_output=True, text=True).stdout if tree else "",
        "marker": marker,
        "weights": weights,
        "cwd": os.getcwd(),
        "source": os.path.exists("source.py"),
        "debian": open("/etc/debian_version").read().strip(),
        "earlier_write": earlier,
        "pid": os.environ.get("HOMEPORT_HOST_PID") or os.getpid(),  # its own PID namespace: 1 in each
    }
