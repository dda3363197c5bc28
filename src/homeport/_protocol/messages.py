"""One type per message between Homeport's processes (client, control plane, container runtime).

Each is a msgspec Struct tagged by the field "t" with the message's name, so a message is the same
msgpack map it always was: a peer that still builds dicts and one that uses these interoperate.
Decoding into the unions at the end checks every field's type; a malformed message is refused with
an error that names the field (`MalformedMessage`), never a KeyError deep in a handler.

Fields left at their default are not sent (`omit_defaults`): a reader treats a missing field as its
default. The function definition and pool settings travel as opaque maps here (their own module
types them).
"""

from __future__ import annotations

from typing import Any, ClassVar, Union

from ._msgspec import Struct
from .rows import CallChunkOutput, CallInput, CallOutput, ChunkOutputRow, InputRow, OutputRow, VolumeFile

RequestId = Union[int, str, None]  # noqa: UP007 - msgspec reads the annotation at runtime (py3.9+)


class Message(Struct, tag_field="t", omit_defaults=True, kw_only=True):
    """Base of every message; `t` is the subclass's tag."""

    t: ClassVar[str]


class Request(Message, kw_only=True):
    """A message that may carry a request id: the peer answers it with a RESULT of the same id."""

    id: RequestId = None


def _message(tag: str):
    """Record the tag as the class's `t` (the struct tag is what travels)."""

    def register(cls):
        cls.t = tag
        return cls

    return register


# --- both ways ---------------------------------------------------------------------------------------
@_message("res")
class Result(Message, tag="res", kw_only=True):
    id: RequestId = None
    ok: bool
    v: Any = None
    code: str | None = None  # an error code (`homeport._protocol.errors`) when not ok
    msg: str | None = None


@_message("hello")
class Hello(Request, tag="hello", kw_only=True):
    role: str  # "client", "container" or "sandbox"
    v: int  # PROTOCOL_VERSION
    token: str | None = None  # the installation token, or a container's own token
    cid: str | None = None  # a container's (or sandbox's) id
    ctoken: str | None = None  # a container's token, when its user code connects as a client


@_message("ping")
class Ping(Message, tag="ping", kw_only=True):
    pass


@_message("pong")
class Pong(Message, tag="pong", kw_only=True):
    pass


# --- client -> control plane: apps -------------------------------------------------------------------
@_message("app_create")
class AppCreate(Request, tag="app_create", kw_only=True):
    name: str | None = None
    description: str | None = None
    detach: bool = False


@_message("app_publish")
class AppPublish(Request, tag="app_publish", kw_only=True):
    app_id: str
    functions: list[dict[str, Any]]  # {"tag", "definition", "config"}


@_message("app_stop")
class AppStop(Request, tag="app_stop", kw_only=True):
    app_id: str


@_message("app_deploy")
class AppDeploy(Request, tag="app_deploy", kw_only=True):
    name: str
    functions: list[dict[str, Any]]
    description: str | None = None
    meta: dict[str, Any] | None = None


@_message("app_lookup")
class AppLookup(Request, tag="app_lookup", kw_only=True):
    name: str
    create_if_missing: bool = False


@_message("app_list")
class AppList(Request, tag="app_list", kw_only=True):
    pass


@_message("app_history")
class AppHistory(Request, tag="app_history", kw_only=True):
    name: str


@_message("app_rollback")
class AppRollback(Request, tag="app_rollback", kw_only=True):
    name: str
    version: int | None = None  # None: the previous version


@_message("app_logs")
class AppLogs(Request, tag="app_logs", kw_only=True):
    app_id: str


@_message("log_query")
class LogQuery(Request, tag="log_query", kw_only=True):
    app_id: str | None = None
    function_id: str | None = None
    container_id: str | None = None
    call_id: str | None = None
    since: float | None = None
    until: float | None = None
    search: str | None = None
    streams: list[str] | None = None
    after_id: int | None = None
    limit: int | None = None


# --- client -> control plane: functions and calls ----------------------------------------------------
@_message("function_lookup")
class FunctionLookup(Request, tag="function_lookup", kw_only=True):
    name: str
    app: str | None = None
    app_id: str | None = None
    version: int | None = None


@_message("bind")
class FunctionBind(Request, tag="bind", kw_only=True):
    fid: str
    params: Any = None
    config: Any = None
    definition: Any = None


@_message("call")
class Call(Request, tag="call", kw_only=True):
    call: str
    fid: str
    kind: str  # KIND_UNARY, KIND_GENERATOR, KIND_MAP, KIND_SPAWN
    inputs: list[CallInput]
    last: bool = True  # no more inputs follow (a map sends False until its last piece)


@_message("map_put")
class MapPut(Request, tag="map_put", kw_only=True):
    call: str
    inputs: list[CallInput]
    last: bool = False


@_message("call_get")
class CallGet(Request, tag="call_get", kw_only=True):
    call: str
    timeout: float | None = None


@_message("call_cancel")
class CallCancel(Request, tag="call_cancel", kw_only=True):
    call: str


# --- client -> control plane: objects ----------------------------------------------------------------
@_message("secret_create")
class SecretCreate(Request, tag="secret_create", kw_only=True):
    name: str
    values: dict[str, Any]
    overwrite: bool = False


@_message("secret_list")
class SecretList(Request, tag="secret_list", kw_only=True):
    pass


@_message("secret_delete")
class SecretDelete(Request, tag="secret_delete", kw_only=True):
    name: str


@_message("volume")
class Volume(Request, tag="volume", kw_only=True):
    op: str  # create|list|delete|rename|ls|read|put|rm|cp
    name: str | None = None
    path: str | None = None
    offset: int | None = None
    length: int | None = None
    recursive: bool = False
    files: list[VolumeFile] | None = None
    force: bool = False
    sources: list[str] | None = None
    dest: str | None = None
    new_name: str | None = None
    exist_ok: bool = False
    ephemeral: bool = False


class _StoredObjectOp(Request, kw_only=True):
    """A Dict's or a Queue's operation (see homeport.server.dictqueue); keys and values are pickled."""

    op: str
    oid: str | None = None  # the object's id
    name: str | None = None
    create_if_missing: bool = False
    allow_existing: bool = False
    key: bytes | None = None
    value: bytes | None = None
    values: list[bytes] | None = None
    items: list[Any] | None = None
    skip_if_exists: bool = False
    partition: bytes | None = None
    partition_ttl: float | None = None
    n: int = 1
    all: bool = False
    total: bool = False
    after: int = 0
    wait: float | None = None
    wait_id: str | None = None


@_message("dict")
class DictOp(_StoredObjectOp, tag="dict", kw_only=True):
    pass


@_message("queue")
class QueueOp(_StoredObjectOp, tag="queue", kw_only=True):
    pass


@_message("tunnel")
class Tunnel(Request, tag="tunnel", kw_only=True):
    op: str  # open|close
    path: str | None = None  # open: the relay's Unix socket
    port: int | None = None


@_message("proxy_token")
class ProxyToken(Request, tag="proxy_token", kw_only=True):
    op: str  # create|list|delete
    token_id: str | None = None


@_message("image_build")
class ImageBuild(Request, tag="image_build", kw_only=True):
    images: list[dict[str, Any]]  # build requests: {"steps": [...], ...}


# --- client -> control plane: the installation -------------------------------------------------------
@_message("status")
class ServerStatus(Request, tag="status", kw_only=True):
    pass


@_message("shutdown")
class ServerShutdown(Request, tag="shutdown", kw_only=True):
    pass


@_message("container_list")
class ContainerList(Request, tag="container_list", kw_only=True):
    pass


@_message("container_stop")
class ContainerStop(Request, tag="container_stop", kw_only=True):
    container_id: str


@_message("container_exec_info")
class ContainerExecInfo(Request, tag="container_exec_info", kw_only=True):
    container_id: str


@_message("dashboard")
class Dashboard(Request, tag="dashboard", kw_only=True):
    pass


# --- control plane -> client -------------------------------------------------------------------------
@_message("out")
class Outputs(Message, tag="out", kw_only=True):
    call: str | None
    items: list[CallOutput]
    chunks: list[CallChunkOutput] = []  # noqa: RUF012 - a struct copies an empty default per instance


@_message("gen")
class GenItems(Message, tag="gen", kw_only=True):
    call: str
    items: list[Any]  # pickled items, in order


@_message("log")
class Log(Message, tag="log", kw_only=True):
    app: str | None = None
    fn: str
    cid: str | None = None
    fd: int = 1
    data: str


# --- control plane -> container ----------------------------------------------------------------------
@_message("inputs")
class Inputs(Message, tag="inputs", kw_only=True):
    items: list[InputRow]


@_message("cancel")
class Cancel(Message, tag="cancel", kw_only=True):
    ids: list[int]


@_message("stop")
class Stop(Message, tag="stop", kw_only=True):
    pass


# --- container -> control plane ----------------------------------------------------------------------
@_message("ready")
class Ready(Message, tag="ready", kw_only=True):
    timeline: dict[str, Any] = {}  # noqa: RUF012 - a struct copies an empty default per instance
    exit_hooks: bool = False


@_message("init_failure")
class InitFailure(Message, tag="init_failure", kw_only=True):
    failure: dict[str, Any]  # {"exc", "repr", "tb"} (`homeport._protocol.failure`)


@_message("couts")
class ContainerOutputs(Message, tag="couts", kw_only=True):
    items: list[OutputRow]
    chunks: list[ChunkOutputRow] = []  # noqa: RUF012 - a struct copies an empty default per instance


@_message("cgen")
class ContainerGen(Message, tag="cgen", kw_only=True):
    input: int
    items: list[bytes]


@_message("crel")
class ContainerRelease(Message, tag="crel", kw_only=True):
    ids: list[int]  # inputs handed back unstarted
    leaving: bool = False  # this container takes no more: what else it was sent goes back too


# --- sandboxes (one type per operation in `sandbox`) -------------------------------------------------
@_message("sandbox")
class Sandbox(Request, tag="sandbox", kw_only=True):
    """A sandbox operation's outer shape. Each operation has its type, tagged by "op"
    (`sandbox.SandboxRequest`): `check_request` checks it, `check_sandbox` answers with it."""

    op: str
    sandbox: str | None = None  # the sandbox's id


@_message("sbout")
class SandboxOut(Message, tag="sbout", kw_only=True):
    exec: str
    fd: int
    data: bytes


@_message("sbexit")
class SandboxExit(Message, tag="sbexit", kw_only=True):
    exec: str
    code: int | None


# --- what each side decodes ---------------------------------------------------------------------------
ToClient = Union[Result, Outputs, GenItems, Log, SandboxOut, SandboxExit, Ping, Pong]  # noqa: UP007
ToContainer = Union[Result, Inputs, Cancel, Stop, Ping, Pong]  # noqa: UP007
FromContainer = Union[Ready, InitFailure, ContainerOutputs, ContainerGen, ContainerRelease, Ping, Pong]  # noqa: UP007
ClientRequest = Union[  # noqa: UP007
    AppCreate, AppPublish, AppStop, AppDeploy, AppLookup, AppList, AppHistory, AppRollback, AppLogs, LogQuery,
    FunctionLookup, FunctionBind, Call, MapPut, CallGet, CallCancel, SecretCreate, SecretList, SecretDelete,
    Volume, DictOp, QueueOp, Tunnel, ProxyToken, ImageBuild, ServerStatus, ServerShutdown, ContainerList,
    ContainerStop, ContainerExecInfo, Dashboard, Sandbox, Ping, Pong,
]
