"""Public module path `modal.partial_function` (Modal programs import from here)."""

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

__all__ = ["asgi_app", "batched", "concurrent", "enter", "exit", "fastapi_endpoint", "method", "web_endpoint", "web_server", "wsgi_app"]
