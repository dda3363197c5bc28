"""A web endpoint: `homeport serve examples/web.py`, then open the URL it prints (try `?name=you`).

Edit the greeting and save: `homeport serve` reloads it under the same URL.
"""

import modal

app = modal.App("web-example")


@app.function()
@modal.fastapi_endpoint(docs=True)
def greet(name: str = "world"):
    return {"greeting": f"Hello, {name}!"}
