"""A function on another Python version than the caller's. The test picks the version."""

import os
import sys

import modal

app = modal.App("images-python")
image = modal.Image.debian_slim(python_version=os.environ.get("HP_TEST_OTHER_PYTHON", "3.12"))


@app.function(image=image)
def version() -> list:
    return list(sys.version_info[:3])
