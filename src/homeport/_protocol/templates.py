"""The messages between the local backend and a template process (`homeport.runtime._template`).

They travel one msgpack map per SOCK_SEQPACKET packet (no length frame), file descriptors alongside
`Fork`. Backend -> template: `TemplateStart` (first, untagged), then `Fork`, `Retire`, `TemplateStop`.
Template -> backend: `Sources`, `TemplateReady` or `TemplateFailed`, then `Forked`, `Spared` and `Exited`.

A template told `spares` keeps one copy forked ahead of demand (`runtime._spare`): it says so (`Spared`),
the backend places it in a cgroup made for it, and a later `Fork` naming it (`Fork.spare`) hands the
container to it instead of forking. Its answer is `Forked` (pid -1: that spare is gone; fork again
without it); a spare that dies unused is reported as `Exited` under its own name.
"""

from __future__ import annotations

from typing import Any, Union

from ._msgspec import Decoder, Encoder, Struct

PACKET = 1 << 16  # the largest packet either side reads
MAX_FDS = 200  # the most descriptors one Fork carries (SCM_RIGHTS allows 253)


class TemplateStart(Struct, omit_defaults=True, kw_only=True):
    private_root: bool = False  # its containers get a root file system image of their own
    definition_path: str | None = None  # a memory snapshot's definition (msgpack), to import ahead
    hide: Any = None  # the private state's plan (`backends.local._private`)
    isolate: dict[str, Any] | None = None  # isolation settings (`runtime._isolate`)
    spares: bool = False  # keep a copy forked ahead of demand, for the backend to place (`Spared`)


class _TemplateMessage(Struct, tag_field="t", omit_defaults=True, kw_only=True):
    pass


class Fork(_TemplateMessage, tag="fork", kw_only=True):
    cid: str
    env: dict[str, str]
    cwd: str | None = None
    t0: float | None = None  # when the control plane asked for the container (time.time())
    private_root: bool = False
    hide: Any = None
    held: bool = False  # a third descriptor: a pipe the child waits on before it runs
    needed: list[Any] = []  # noqa: RUF012 - copied per instance; [[path, read_only], ...] it needs to see
    uid: int | None = None  # the host user it runs as, where each container gets one of its own
    # Paths it mounts from descriptors passed after its stdout and stderr (`runtime._copyusers`).
    mounts: list[str] = []  # noqa: RUF012 - copied per instance
    spare: str | None = None  # the placed spare to hand this container to (`Spared.name`), not a new fork


class Retire(_TemplateMessage, tag="retire", kw_only=True):
    pass


class TemplateStop(_TemplateMessage, tag="stop", kw_only=True):
    pass


class Sources(_TemplateMessage, tag="sources", kw_only=True):
    files: list[list[Any]]  # [path, mtime in ns, size, inode] of each file the snapshot imported


class TemplateReady(_TemplateMessage, tag="ready", kw_only=True):
    seconds: float
    visible: Any = None
    isolation: list[str] = []  # noqa: RUF012 - a struct copies an empty default per instance
    own_pids: bool = False  # its copies are in PID namespaces of their own: each sends its own Forked (pid 0)
    copy_users: bool = False  # a snapshot whose copies need their writable paths from the backend (`Fork.mounts`)


class TemplateFailed(_TemplateMessage, tag="failed", kw_only=True):
    error: str


class Forked(_TemplateMessage, tag="forked", kw_only=True):
    cid: str
    pid: int  # 0: sent by the copy itself, whose host pid the backend reads from the socket's credentials


class Spared(_TemplateMessage, tag="spared", kw_only=True):
    name: str  # unique among the template's spares; its `Exited` uses it as a container id
    pid: int  # 0: sent by the spare itself, whose host pid the backend reads from the socket's credentials


class Exited(_TemplateMessage, tag="exit", kw_only=True):
    cid: str
    code: int


ToTemplate = Union[Fork, Retire, TemplateStop]  # noqa: UP007
FromTemplate = Union[Sources, TemplateReady, TemplateFailed, Forked, Spared, Exited]  # noqa: UP007

_encoder = Encoder()
_to_template = Decoder(ToTemplate)
_from_template = Decoder(FromTemplate)
_start = Decoder(TemplateStart)


def encode_packet(message: Struct) -> bytes:
    return _encoder.encode(message)


def decode_start(packet: bytes) -> TemplateStart:
    return _start.decode(packet)


def decode_to_template(packet: bytes) -> Fork | Retire | TemplateStop:
    return _to_template.decode(packet)


def decode_from_template(packet: bytes) -> Sources | TemplateReady | TemplateFailed | Forked | Spared | Exited:
    return _from_template.decode(packet)
