"""Functions in different images: which packages, interpreter and files each one sees."""

import importlib.util
import os
import sys

import modal

PINNED = "tabulate==0.9.0"  # small, pure Python, and not installed where the tests run


def write_marker(text: str) -> None:
    """A build step: it runs in the image being built, so it can use the packages installed before it."""
    import tabulate as t

    with open(os.path.join(sys.prefix, "marker.txt"), "w") as f:
        f.write(f"{text} with tabulate {t.__version__}")


pinned = modal.Image.debian_slim().pip_install(PINNED).env({"IMAGE_FLAVOUR": "pinned"})
plain = modal.Image.debian_slim().env({"IMAGE_FLAVOUR": "plain"})
built = (
    modal.Image.debian_slim()
    .pip_install(PINNED)
    .run_function(write_marker, args=("written at build time",))
    .workdir("/tmp")
    .add_local_python_source("hp_image_helper")  # made by the test, in a directory off the function's sys.path
)

HERE = os.path.dirname(os.path.abspath(__file__))
# Local files at paths the host does not have; they need the sandbox (bubblewrap) that volumes use.
files = (
    modal.Image.debian_slim()
    .add_local_file(os.path.join(HERE, "images_python.py"), "/hp-copied/source.py", copy=True)
    .workdir("/hp-workdir")
    .add_local_dir(HERE, "/hp-data", ignore=["*.pyc", "__pycache__", "images_rootfs.py"])
)

app = modal.App("images", image=plain)

with pinned.imports():
    import tabulate  # only importable inside the pinned image; other containers skip it


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def probe() -> dict:
    version = None
    if _has("tabulate"):
        import tabulate as t

        version = t.__version__
    return {
        "tabulate": version,
        "pytest": _has("pytest"),
        "psutil": _has("psutil"),
        "flavour": os.environ.get("IMAGE_FLAVOUR"),
        "prefix": sys.prefix,
        "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
    }


@app.function(image=pinned)
def in_pinned() -> dict:
    return probe()


@app.function()
def in_plain() -> dict:
    return probe()


@app.function(image=pinned)
def table() -> str:
    return tabulate.tabulate([[1, 2]], headers=["a", "b"])


@app.function(image=built)
def in_built() -> dict:
    import hp_image_helper

    with open(os.path.join(sys.prefix, "marker.txt")) as f:
        marker = f.read()
    return {"marker": marker, "helper": hp_image_helper.VALUE, "helper_file": hp_image_helper.__file__,
            "cwd": os.getcwd()}


@app.function(image=files)
def in_files() -> dict:
    return {"copied": os.path.isfile("/hp-copied/source.py"), "data": sorted(os.listdir("/hp-data")),
            "cwd": os.getcwd()}
