"""The sandbox sub-protocol: a client's sandbox operations, the control plane's requests to a sandbox's
agent, and the shapes of their replies.

A client's operation is the message `{"t": "sandbox", "op": ..., "id", "sandbox": id, ...}`; one type
per operation, tagged by "op" (`SandboxRequest`'s subclasses). The control plane's requests to the
agent inside a sandbox (`python -m homeport.runtime._sandbox_agent`) are `{"t": "sbagent", "op": ...}`
(`AgentRequest`'s). The agent answers with `Result` and pushes `SandboxOut` / `SandboxExit` / `Ready`
(`messages`), which the control plane forwards to the client that reads the exec.

These are tagged by "op", not "t" (the outer message type is their field `t`, always sent): they are
checked by their operation after the outer type is known (`codec.check_request`, `check_to_agent`).
Their defaults are sent too (unlike `messages`'), so `t` always travels; a reader treats a missing
field as its default all the same. The agent runs in the sandbox's image, possibly on the msgspec
stand-in (`_lite`): only the subset of msgspec it has is used here.
"""

from __future__ import annotations

from typing import Any, Literal, Union

from ._msgspec import Struct
from .messages import Ping, Pong, Ready, RequestId, Result, SandboxExit, SandboxOut

StreamMode = Literal["pipe", "devnull", "stdout"]  # an exec's stdout or stderr ("stdout": merged into it)
FsAction = Literal["read", "write", "list", "mkdir", "remove", "stat"]
Fd = Literal[1, 2]
FileKind = Literal["file", "directory", "symlink"]


# --- client -> control plane -------------------------------------------------------------------------
class SandboxRequest(Struct, tag_field="op", kw_only=True):
    """A client's sandbox operation; `sandbox` names the sandbox it acts on (not for create|list|from_name)."""

    t: str = "sandbox"
    id: RequestId = None
    sandbox: str | None = None


class SandboxCreate(SandboxRequest, tag="create", kw_only=True):
    """-> `SandboxInfo`. `image` (build steps) only from a container; `image_id` from a client."""

    app_id: str | None = None  # None: the calling container's own app
    argv: list[str] = []  # noqa: RUF012 - a struct copies an empty default per instance
    name: str | None = None
    tags: dict[str, str] | None = None
    timeout: float | None = None  # seconds (None: 300)
    idle_timeout: float | None = None
    workdir: str | None = None
    env: dict[str, str] | None = None
    secret_refs: list[dict[str, Any]] | None = None  # named secrets: {"name", "required_keys"}
    volumes: list[dict[str, Any]] | None = None  # {"path", "name", "create_if_missing"}
    pty: bool = False
    block_network: bool = False
    ports: list[int] | None = None  # tunnelled to this machine
    cpu_limit: float | None = None
    memory_limit_mib: int | None = None
    outbound_cidr_allowlist: list[str] | None = None
    outbound_domain_allowlist: list[str] | None = None
    inbound_cidr_allowlist: list[str] | None = None
    image: dict[str, Any] | None = None  # a build request: {"steps": [...]}
    image_id: str | None = None


class SandboxGet(SandboxRequest, tag="get", kw_only=True):
    """-> `SandboxInfo`."""


class SandboxWait(SandboxRequest, tag="wait", kw_only=True):
    """-> `SandboxInfo`, once it exited or after `timeout` seconds."""

    timeout: float | None = None


class SandboxTerminate(SandboxRequest, tag="terminate", kw_only=True):
    """-> `SandboxInfo`; with `wait`, once it exited."""

    wait: bool = False


class SandboxList(SandboxRequest, tag="list", kw_only=True):
    """-> [`SandboxInfo`] of the running sandboxes of `app_id` (any app: None) with all of `tags`."""

    app_id: str | None = None
    tags: dict[str, str] | None = None


class SandboxFromName(SandboxRequest, tag="from_name", kw_only=True):
    """-> `SandboxInfo` of the running sandbox `name` of the deployed app `app_name`."""

    app_name: str
    name: str


class SandboxSetTags(SandboxRequest, tag="set_tags", kw_only=True):
    tags: dict[str, str]


class SandboxTunnels(SandboxRequest, tag="tunnels", kw_only=True):
    """-> {"<port in the sandbox>": port on this machine's 127.0.0.1}."""


class SandboxMainRead(SandboxRequest, tag="main_read", kw_only=True):
    """-> `MainChunk`: the sandbox's own command's output on `fd` from `offset` (waits for some)."""

    fd: Fd
    offset: int = 0


class SandboxExec(SandboxRequest, tag="exec", kw_only=True):
    """-> the exec's id; its output comes pushed as SANDBOX_OUT, then SANDBOX_EXIT."""

    exec: str | None = None  # the client names it, to watch for its output before it arrives
    argv: list[str]
    env: dict[str, str] | None = None
    secret_refs: list[dict[str, Any]] | None = None
    workdir: str | None = None
    pty: bool = False
    stdout: StreamMode = "pipe"
    stderr: StreamMode = "pipe"
    timeout: float | None = None


class SandboxStdin(SandboxRequest, tag="stdin", kw_only=True):
    """Input for an exec (no reply): in the order of the connection."""

    exec: str
    data: bytes = b""
    eof: bool = False


class SandboxAck(SandboxRequest, tag="ack", kw_only=True):
    """How much of an exec's output on `fd` its reader consumed (no reply): the agent reads on."""

    exec: str
    fd: Fd
    n: int


class SandboxFs(SandboxRequest, tag="fs", kw_only=True):
    """A file operation in the sandbox's own view -> read: bytes; list: [`FileEntry`]; stat: `FileEntry`."""

    action: FsAction
    path: str
    data: bytes | None = None  # write
    parents: bool = False  # mkdir
    recursive: bool = False  # remove
    timeout: float | None = None


class SandboxProbe(SandboxRequest, tag="probe", kw_only=True):
    """-> whether the readiness probe passes now: a TCP port that accepts, or a command that exits 0."""

    port: int | None = None
    argv: list[str] = []  # noqa: RUF012
    timeout: float | None = None


# --- control plane -> a sandbox's agent --------------------------------------------------------------
class AgentRequest(Struct, tag_field="op", kw_only=True):
    """A request to the agent (answered with a Result when it has an `id`)."""

    t: str = "sbagent"
    id: RequestId = None


class AgentExec(AgentRequest, tag="exec", kw_only=True):
    exec: str
    argv: list[str]
    env: dict[str, str] | None = None
    workdir: str | None = None
    pty: bool = False
    stdout: StreamMode = "pipe"
    stderr: StreamMode = "pipe"
    timeout: float | None = None


class AgentStdin(AgentRequest, tag="stdin", kw_only=True):
    exec: str
    data: bytes = b""
    eof: bool = False


class AgentAck(AgentRequest, tag="ack", kw_only=True):
    exec: str
    fd: Fd
    n: int


class AgentUnwatched(AgentRequest, tag="unwatched", kw_only=True):
    """The exec's reader is gone: it runs on, its output no longer waits for acknowledgements."""

    exec: str


class AgentFs(AgentRequest, tag="fs", kw_only=True):
    action: FsAction
    path: str
    data: bytes | None = None
    parents: bool = False
    recursive: bool = False


class AgentProbe(AgentRequest, tag="probe", kw_only=True):
    port: int | None = None
    argv: list[str] = []  # noqa: RUF012


# --- replies ------------------------------------------------------------------------------------------
class SandboxInfo(Struct, kw_only=True):
    """What create|get|wait|terminate|list|from_name answer."""

    sandbox_id: str
    app_id: str
    name: str | None = None
    tags: dict[str, str] = {}  # noqa: RUF012
    returncode: int | None = None  # None while it runs
    reason: str | None = None  # "timeout" | "terminated" | "idle" once the control plane ended it
    created_at: float = 0.0
    error: str | None = None  # why it could not start


class MainChunk(Struct, kw_only=True):
    """What `main_read` answers: output from where it asked, the offset after it, whether it ended."""

    data: bytes
    offset: int
    eof: bool


class FileEntry(Struct, kw_only=True):
    path: str
    type: FileKind
    size: int
    mtime: float
    mode: int


CLIENT_OPS = (SandboxCreate, SandboxGet, SandboxWait, SandboxTerminate, SandboxList, SandboxFromName, SandboxSetTags,
              SandboxTunnels, SandboxMainRead, SandboxExec, SandboxStdin, SandboxAck, SandboxFs, SandboxProbe)
AGENT_OPS = (AgentExec, AgentStdin, AgentAck, AgentUnwatched, AgentFs, AgentProbe)
FromAgent = Union[Result, SandboxOut, SandboxExit, Ready, Ping, Pong]  # noqa: UP007
