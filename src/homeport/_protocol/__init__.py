"""The one contract between Homeport's processes: message types, rows, status and error codes, the
template messages, the frame reader, environment variables.

Data and pure encoding only; this package imports nothing of Homeport's outside itself and does no
I/O, so the SDK, the control plane, the backends and the container runtime can all depend on it.
The message types are in `messages` (re-exported here), the rows in `rows`, the error codes in
`errors`, the backend <-> template messages in `templates`, the frame reader in `frames`.

Every message is a msgpack map framed by a 4-byte big-endian length. Requests carry `id`; the reply
is `{"t": RESULT, "id": ..., "ok": bool, "v": value}` or `{..., "ok": False, "code": ..., "msg": ...}`.
Pushed messages (outputs, generator items, logs, inputs to a container) carry no `id`.
"""

# ruff: noqa: F401 - this module re-exports the contract's parts
from __future__ import annotations

from typing import Any

from . import dictqueue, errors, messages, rows, sandbox, templates
from .codec import (
    MalformedMessage,
    TypedDecoder,
    as_dict,
    check_client,
    check_from_agent,
    check_from_container,
    check_hello,
    check_request,
    check_sandbox,
    check_to_agent,
    decode,
    decode_from_client,
    decode_from_container,
    decode_request,
    decode_to_client,
    decode_to_container,
    encode,
    encode_body,
    replace,
    reply_as,
)
from .errors import ERROR
from .frames import HEADER, FrameReader, FrameTooLarge
from .messages import *  # noqa: F403 - every message type, as P.Call, P.Result, ...
from .rows import (
    PLAIN_ARG_BYTES,
    PLAIN_ARGS,
    PLAIN_INT,
    CallChunkOutput,
    CallInput,
    CallOutput,
    ChunkOutputRow,
    InputRow,
    OutputRow,
    VolumeFile,
)
from .sandbox import *  # noqa: F403 - the sandbox operations, as P.SandboxExec, P.AgentExec, ...

PROTOCOL_VERSION = 1

# --- environment variables -------------------------------------------------------------------------
ENV_SERVER_ADDRESS = "HOMEPORT_SERVER_ADDRESS"  # the control plane's Unix socket path, or tcp://HOST:PORT
# HOST:PORT where the control plane also listens on TCP, for containers on other machines (per-container
# credentials only; admin clients use the Unix socket). The Ray backend listens by default.
ENV_LISTEN = "HOMEPORT_LISTEN"
# A directory every node of a cluster sees at the same path (a shared file system): volumes live there
# when containers run on more than one machine (the Ray backend refuses volumes without it).
ENV_SHARED_ROOT = "HOMEPORT_SHARED_ROOT"
ENV_STATE_DIR = "HOMEPORT_STATE_DIR"  # where state, logs, the token and the socket live
ENV_BACKEND = "HOMEPORT_BACKEND"  # name of the container backend ("local", "ray")
ENV_RAY_ADDRESS = "HOMEPORT_RAY_ADDRESS"  # the Ray cluster the ray backend joins ("auto": this machine's)
ENV_CONTAINER_ID = "HOMEPORT_CONTAINER_ID"
ENV_CONTAINER_TOKEN = "HOMEPORT_CONTAINER_TOKEN"
ENV_IS_REMOTE = "HOMEPORT_IS_REMOTE"  # "1" inside a container
ENV_MODAL_IS_REMOTE = "MODAL_IS_REMOTE"  # what Modal programs read
ENV_MODAL_ALIAS = "HOMEPORT_MODAL_ALIAS"  # "1": `import modal` resolves to homeport
ENV_TEMPLATES = "HOMEPORT_TEMPLATES"  # "0": containers start as fresh interpreters, not forked from templates
# Directories appended to sys.path in an image's environment (by a .pth file in it): the runtime and
# its own dependencies, after the image's packages, so a package the image pins wins.
ENV_RUNTIME_PATH = "HOMEPORT_RUNTIME_PATH"
ENV_IMAGE_HASH = "HOMEPORT_IMAGE_HASH"  # in a container: `Image.content_hash()` of its image (`Image.imports()`)
ENV_MODAL_IMAGE_ID = "MODAL_IMAGE_ID"  # in a container: the id of its built image
# In a container: when the control plane asked for it (seconds since the epoch), so the timeline of a
# container that started as a fresh process shows how long the process took to start.
ENV_STARTED_AT = "HOMEPORT_STARTED_AT"

# A script run as `python app.py` is imported in its containers under this name (not `__main__`, so
# that its `if __name__ == "__main__":` block does not run there). What the container pickles by
# reference to it (exception classes, returned objects) names this module; the script's own process
# knows it as an alias of its `__main__`.
SCRIPT_MODULE = "__homeport_main__"

# --- message types ---------------------------------------------------------------------------------
RESULT = "res"
HELLO = "hello"
# client -> control plane
APP_CREATE = "app_create"
APP_PUBLISH = "app_publish"
APP_STOP = "app_stop"
APP_DEPLOY = "app_deploy"  # {"name", "functions"} -> {"app_id", "version", "ids"}
APP_LOOKUP = "app_lookup"  # {"name", "create_if_missing"} -> {"app_id", "name"}
APP_LIST = "app_list"  # -> [{"app_id", "name", "state", "version", ...}]
APP_HISTORY = "app_history"  # {"name"} -> [{"version", "created_at", "functions"}]
APP_ROLLBACK = "app_rollback"  # {"name", "version" (None: the previous)} -> {"app_id", "version", "from_version"}
APP_LOGS = "app_logs"  # {"app_id"}: stream the app's container logs to this client
# {app_id, function_id, container_id, call_id, since, until, search, streams, after_id, limit} (server/logs.py)
# -> {"entries": [{id, ts, app_id, function_id, function, container_id, call_id, stream, data}], "running"}
LOG_QUERY = "log_query"
SECRET_CREATE = "secret_create"  # {"name", "values", "overwrite"}
SECRET_LIST = "secret_list"  # -> [{"name", "created_at", "updated_at", "keys"}] (never values)
SECRET_DELETE = "secret_delete"  # {"name"}
VOLUME = "volume"  # {"op": create|list|delete|ls|read|put|rm|cp, "name", ...}
# {"op", "oid" (the object's id), ...}: see homeport.server.dictqueue; keys and values travel pickled
DICT = "dict"
QUEUE = "queue"
# From a container (`modal.forward`): {"op": "open", "path": its relay's Unix socket, "port"} -> {"url", "port"};
# {"op": "close", "port": the gateway port}.
TUNNEL = "tunnel"
TUNNEL_ABSTRACT_PREFIX = "\0homeport-fwd-"  # a relay's abstract socket name (containers on the host network)
PROXY_TOKEN = "proxy_token"  # {"op": create|list|delete, "token_id"}: credentials for requires_proxy_auth
FUNCTION_LOOKUP = "function_lookup"  # {"app", "name"} -> {"fid", "tag", "is_generator", "info"}
CALL = "call"  # create a function call with its first inputs
MAP_PUT = "map_put"  # more inputs for a map call
CALL_GET = "call_get"  # wait for the output of a (spawned) call
CALL_CANCEL = "call_cancel"
SERVER_STATUS = "status"
SERVER_SHUTDOWN = "shutdown"
CONTAINER_LIST = "container_list"
CONTAINER_STOP = "container_stop"
DASHBOARD = "dashboard"  # -> {"url", "login_url"}: where the control plane serves its dashboard
CONTAINER_EXEC_INFO = "container_exec_info"  # {"container_id"} -> {"pid", "state", "env"}: for `container exec`
# {"images": [{"steps": [...]}, ...]} -> ["im-...", ...]; builds what is not cached, streaming LOG
# messages ({"fn": "image", "cid": image id}) to the caller; a failed step answers code "image_build".
IMAGE_BUILD = "image_build"
# control plane -> client
OUTPUTS = "out"  # {"call": id, "items": [[idx, status, data], ...]}
GEN_ITEMS = "gen"  # {"call": id, "items": [data, ...]}
LOG = "log"  # {"app": id, "fn": tag, "cid": id, "fd": 1|2, "data": str}
# control plane -> container
INPUTS = "inputs"  # {"items": [[input_id, args], ...]}
CANCEL = "cancel"  # {"ids": [input_id, ...]}
STOP = "stop"
# container -> control plane
READY = "ready"  # {"timeline": {...}}
INIT_FAILURE = "init_failure"  # {"failure": {...}}
CONTAINER_OUTPUTS = "couts"  # {"items": [[input_id, status, data, seconds], ...]}
CONTAINER_GEN = "cgen"  # {"input": input_id, "items": [data, ...]}

# --- call kinds ------------------------------------------------------------------------------------
KIND_UNARY = "unary"
KIND_GENERATOR = "gen"
KIND_MAP = "map"
KIND_SPAWN = "spawn"

# --- output status ---------------------------------------------------------------------------------
SUCCESS = 0
FAILURE = 1  # data is a failure map: {"exc": pickled exception or None, "repr": str, "tb": str}
TIMEOUT = 2
TERMINATED = 3  # cancelled
INIT_FAILURE_STATUS = 4  # the container failed before it could run the input
INTERNAL = 5  # the platform lost the input (container died); data is a failure map
GENERATOR_DONE = 6  # data is the number of items yielded

# --- encoding --------------------------------------------------------------------------------------
MAX_MESSAGE_BYTES = 1 << 30  # the control plane closes a connection that sends a bigger frame
# The most one pickled argument tuple or result may take: a message holds it and a little more.
MAX_PAYLOAD_BYTES = MAX_MESSAGE_BYTES - (64 << 10)


def failure(exc_pickled: bytes | None, exc_repr: str, traceback: str) -> dict[str, Any]:
    """An output's data when its input failed (FAILURE, TIMEOUT, INTERNAL)."""
    return {"exc": exc_pickled, "repr": exc_repr, "tb": traceback}


# --- markers the SDK's decorators leave on user objects; the runtime reads them, never SDK internals --
USER_CALLABLE_ATTR = "__homeport_user_callable__"  # on a Function: the raw Python callable
USER_CLASS_ATTR = "__homeport_user_class__"  # on a Cls: the raw user class
LIFECYCLE_ATTR = "__homeport_lifecycle__"  # on a method: ("enter", snap) or ("exit", False)
METHOD_ATTR = "__homeport_method__"  # on a method: {"is_generator": bool}

CONTAINER_RELEASE = "crel"  # {"ids": [...]}: inputs a container hands back unstarted
FUNCTION_BIND = "bind"  # {"fid", "params", "config", "definition"} -> a function id for that variant
CONCURRENT_ATTR = "__homeport_concurrent__"  # on a function or class: {"max_inputs": n, "target_inputs": m}
BATCHED_ATTR = "__homeport_batched__"  # on a function or method: {"max_batch_size": n, "wait_ms": ms}
WEB_ATTR = "__homeport_web__"  # on a method: its web endpoint config {"type": "fastapi_endpoint", ...}

# --- web endpoints ---------------------------------------------------------------------------------
ENV_WEB_SOCKET = "HOMEPORT_WEB_SOCKET"  # in a web container: its endpoints listen on "<this>-<index>"
ENV_PRIVATE_NETWORK = "HOMEPORT_PRIVATE_NETWORK"  # "1": the container has a network namespace of its own
ENV_HOST_PID = "HOMEPORT_HOST_PID"  # in a container in a PID namespace of its own: its process as the host sees it
# A spawned container's runtime isolates itself before anything else (`runtime._spawned`): JSON
# {"uid": host user to become, "hidden": the state directory, "needed": [[path, writable], ...]};
# taken out of its environment.
ENV_ISOLATE = "HOMEPORT_ISOLATE"
# Each container is a host user of its own, CONTAINER_UIDS + n (the local backend's `container_uid`).
# One in an image with its own root file system also gets host ids for the image's other users (ids
# 1-65535 inside: `runuser -u alice`), 65536 of its own from SUBORDINATE_IDS on (`subordinate_ids`).
CONTAINER_UIDS = 165536
CONTAINER_UID_COUNT = 65536
SUBORDINATE_IDS = 1 << 20


def subordinate_ids(uid: int) -> int | None:
    """The host id that id 1 inside container user `uid`'s namespace maps to (1-65535 follow on), or
    None where `uid` is not one of the per-container users (a shared one: only its root is mapped)."""
    n = uid - CONTAINER_UIDS
    if not 0 <= n < CONTAINER_UID_COUNT:
        return None
    first = SUBORDINATE_IDS + n * 65536
    return first if first + 65536 < 1 << 32 else None
WEB_TYPES = ("fastapi_endpoint", "asgi_app", "wsgi_app", "web_server", "server")
WEB_PROXIED = ("web_server", "server")  # the user's own server on a port: bridged, in its own network

# --- liveness --------------------------------------------------------------------------------------
# Either side of a connection may send PING when it has heard nothing for HEARTBEAT_SECONDS while it
# waits for something; the other answers PONG at once. Nothing is sent on a connection that is busy
# (any message counts as a sign of life), so calls pay no extra round trip. A peer silent for
# SILENCE_WARN_SECONDS is reported ("has not answered for 10 s"): a stopped (SIGSTOP) or wedged process.
PING = "ping"
PONG = "pong"
HEARTBEAT_SECONDS = 2.0
SILENCE_WARN_SECONDS = 10.0
# Client side: after this many seconds of silence (unset: never) the client gives up on the control
# plane and fails what waits on it with ConnectionError; by default it warns and keeps waiting.
ENV_CONTROL_PLANE_TIMEOUT = "HOMEPORT_CONTROL_PLANE_TIMEOUT"
# --- sandboxes -------------------------------------------------------------------------------------
# client -> control plane: {"op": create|get|wait|terminate|list|from_name|set_tags|tunnels|main_read|exec|
# stdin|ack|fs|probe, "sandbox": id, ...} (`sandbox`: one type per operation); exec output comes back
# pushed as SANDBOX_OUT / SANDBOX_EXIT.
SANDBOX = "sandbox"
SANDBOX_OUT = "sbout"  # {"exec": id, "fd": 1|2, "data": bytes}: output of an exec, as it arrives
SANDBOX_EXIT = "sbexit"  # {"exec": id, "code": int}: the exec exited (after its last output)
# control plane <-> a sandbox's agent (`python -m homeport.runtime._sandbox_agent`, hello role "sandbox"):
# requests {"t": SANDBOX_AGENT, "id", "op": exec|stdin|ack|unwatched|fs|probe, ...} (`sandbox.AgentRequest`);
# the agent answers RESULT and pushes SANDBOX_OUT/EXIT and READY (`sandbox.FromAgent`).
SANDBOX_AGENT = "sbagent"
ENV_SANDBOX = "HOMEPORT_SANDBOX"  # in a sandbox: its agent's configuration (JSON)
# What the platform alone puts in a container's environment. None is ever taken from a user's (an image's
# env, a function's env or secrets, a class variant's, a sandbox's env=): code in a container can make
# those, and each of these names something the runtime or the backend trusts (its socket, its identity,
# the paths it keeps in view or may write, how it isolates itself).
PLATFORM_ENV = frozenset({
    ENV_SERVER_ADDRESS, ENV_CONTAINER_ID, ENV_CONTAINER_TOKEN, ENV_IS_REMOTE, ENV_MODAL_IS_REMOTE, ENV_RUNTIME_PATH,
    ENV_IMAGE_HASH, ENV_MODAL_IMAGE_ID, ENV_STARTED_AT, ENV_WEB_SOCKET, ENV_PRIVATE_NETWORK, ENV_HOST_PID, ENV_ISOLATE,
    ENV_SANDBOX, "MODAL_SANDBOX_ID",
})


def user_environment(env: dict[str, str]) -> dict[str, str]:
    """`env` without what only the platform may set (`PLATFORM_ENV`)."""
    return {k: v for k, v in env.items() if k not in PLATFORM_ENV}
SANDBOX_MAIN = "main"  # the exec id of a sandbox's own command (`Sandbox.create(*args)`)
