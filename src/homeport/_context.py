"""Per-input context inside a container: which input and which call the running code serves.

A leaf module shared by the runtime (which sets it around each input) and the SDK (whose
`modal.current_input_id()` and `modal.current_function_call_id()` read it). Context variables, so
that inputs running at once (threads, asyncio tasks) each see their own.
"""

from __future__ import annotations

import contextvars

input_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("homeport_input_id", default=None)
function_call_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("homeport_call_id", default=None)

# Inside a container: (container id, container token, app id), set by the runtime at start-up, so
# that user code can call other functions of its app through the control plane as this container.
container: tuple[str, str, str | None] | None = None

# True in a container's runtime process (and processes forked from it), as Modal's task lifecycle
# singleton: `modal.is_local()` is False there, True in other processes (a function's subprocesses too).
runtime_process: bool = False

# True while a container's runtime imports the user's module (or unpickles a serialized function).
# Module-level code runs in every container of the app, so a function call made from it would have
# each new container call again while starting, and none would ever serve: the SDK refuses it.
loading_user_code: bool = False
