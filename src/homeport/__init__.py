"""Homeport: Modal's programming model on your own machines.

```python
import homeport as modal

app = modal.App("hello")

@app.function()
def square(x: int) -> int:
    return x * x

if __name__ == "__main__":
    with app.run():
        print(square.remote(7), list(square.map(range(5))))
```
"""

from __future__ import annotations

from . import exception
from ._app import App, Stub
from ._cls import Cls, Obj, Server, parameter
from ._dict import Dict
from ._function import Function
from ._function_call import FunctionCall
from ._image import Image
from ._partial import (
    asgi_app,
    batched,
    concurrent,
    enter,
    exit,
    fastapi_endpoint,
    method,
    web_endpoint,
    web_server,
    wsgi_app,
)
from ._queue import Queue
from ._retries import Retries
from ._sandbox import Probe, Sandbox
from ._schedule import Cron, Period
from ._secret import Secret
from ._tunnel import Tunnel, forward
from ._version import __version__
from ._volume import Volume
from .exception import Error

__all__ = [
    "App",
    "Cls",
    "Cron",
    "Dict",
    "Error",
    "Function",
    "FunctionCall",
    "Image",
    "Obj",
    "Period",
    "Probe",
    "Queue",
    "Retries",
    "Sandbox",
    "Secret",
    "Server",
    "Stub",
    "Tunnel",
    "Volume",
    "__version__",
    "asgi_app",
    "batched",
    "concurrent",
    "current_function_call_id",
    "current_input_id",
    "enable_output",
    "enter",
    "exception",
    "exit",
    "fastapi_endpoint",
    "forward",
    "is_local",
    "method",
    "parameter",
    "web_endpoint",
    "web_server",
    "wsgi_app",
]


def is_local() -> bool:
    """False in a Homeport container's process (module import, hooks, inputs; forks of it too), True
    everywhere else, a function's subprocesses included (as Modal's)."""
    from . import _context

    return not _context.runtime_process


def current_input_id() -> str | None:
    """The id of the input the calling code is running for, inside a container; None elsewhere."""
    from . import _context

    return _context.input_id.get()


def current_function_call_id() -> str | None:
    """The id of the function call (`FunctionCall.object_id`) being served; None outside a container."""
    from . import _context

    return _context.function_call_id.get()


class enable_output:
    """Context manager kept for compatibility: container output streams during `app.run()` already."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# Modal's other public names: placeholders that raise UnimplementedError naming themselves when used
# (a name defined above, or by a module imported above, is kept).
from . import _placeholders  # noqa: E402

__all__ += _placeholders.install(globals())
