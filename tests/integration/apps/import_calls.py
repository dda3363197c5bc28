"""An app whose module calls one of its functions at import, unguarded, inside containers."""

import modal

app = modal.App("import-calls")


@app.function(startup_timeout=20)
def echo(x):
    return x


if not modal.is_local():  # runs in every container of the app, as it imports this module
    echo.remote("from module level")
