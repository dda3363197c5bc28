"""A module that uses more memory than its function's limit while it is imported."""

import os

import modal

app = modal.App("resources-import")

if os.environ.get("HOMEPORT_IS_REMOTE") == "1":  # in the container only: this is the import it runs
    _block = bytearray(400 << 20)
    for _i in range(0, len(_block), 4096):  # touch every page so the memory is really used
        _block[_i] = 1


@app.function(memory=(64, 200))
def on_import():
    return "never: the container cannot finish importing this module"
