"""`modal.Sandbox`: a container you drive from your program — run commands in it, read and write its
files, reach its ports — for code you did not write (agents' code, submissions, code interpreters).

```python
app = modal.App.lookup("sandboxes", create_if_missing=True)
sb = modal.Sandbox.create(app=app, timeout=600)
p = sb.exec("python", "-c", "print(6 * 7)")
print(p.stdout.read(), p.wait())
sb.terminate()
```

A sandbox is a container of the backend like a function's, from the same images, with volumes and
secrets; its process is an agent (`homeport.runtime._sandbox_agent`) that runs its command and execs.
On the local backend the host's directories are read-only inside and /tmp is its own (a root file
system image, `apt_install` ..., is writable: a fresh layer per sandbox), so what it writes does not
reach the host. Its network is its own where the machine allows (a network namespace: two sandboxes
listen on one port; the machine's own services are out of reach), with HTTP and HTTPS out through the
control plane's proxy, which enforces `outbound_domain_allowlist` / `outbound_cidr_allowlist`
(`homeport.server.egress` says exactly what gets out); `block_network=True` leaves only loopback.
"""

from __future__ import annotations

import asyncio
import posixpath
import secrets as _tokens
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from . import _protocol as P
from ._bridge import aio_method, run_async, run_sync
from ._client import get_client
from ._image_request import build_request
from ._option_values import parse_volumes
from ._sandbox_fs import SandboxFilesystem
from ._sandbox_support import (
    ClassMethodWithAio,
    Probe,
    ask_info,
    build_image,
    enforced_limit,
    in_container,
    list_infos,
    listed,
    request,
    split_secrets,
    unimplemented,
)
from ._secret import check_object_name
from ._tunnel import Tunnel
from .container_process import ContainerProcess, watch_exec
from .exception import (
    InvalidError,
    SandboxTerminatedError,
    SandboxTimeoutError,
    TimeoutError,
)
from .io_streams import StreamReader, StreamWriter
from .stream_type import StreamType

__all__ = ["Probe", "Sandbox", "SandboxFilesystem"]

MAX_TIMEOUT = 24 * 60 * 60


class _ListMethod:
    """`Sandbox.list(...)` iterates; `Sandbox.list.aio(...)` is an async iterator."""

    def __get__(self, obj: Any, cls: Any) -> _ListMethod:
        self._cls = cls
        return self

    def __call__(self, *, app_id: str | None = None, tags: dict[str, str] | None = None,
                 client: Any = None, environment_name: str | None = None) -> Iterator[Sandbox]:
        found = run_sync(list_infos(P.SandboxList(app_id=app_id, tags=tags or {})))
        return iter([self._cls._from_info(info) for info in found])

    async def aio(self, *, app_id: str | None = None, tags: dict[str, str] | None = None,
                  client: Any = None, environment_name: str | None = None) -> AsyncIterator[Sandbox]:
        found = await run_async(list_infos(P.SandboxList(app_id=app_id, tags=tags or {})))
        for info in found:
            yield self._cls._from_info(info)


class Sandbox:
    """A running container you drive from your program (see the module's docstring)."""

    _id: str
    _info: P.SandboxInfo
    _returncode: int | None
    _reason: str | None
    _probe: Probe | None
    _detached: bool
    _main_offsets: dict[int, int]
    _unencrypted: set[int]
    stdout: StreamReader
    stderr: StreamReader
    stdin: StreamWriter
    filesystem: SandboxFilesystem

    def __init__(self) -> None:
        raise InvalidError("Sandbox cannot be constructed directly; use Sandbox.create, from_id or from_name.")

    @classmethod
    def _from_info(cls, info: P.SandboxInfo, probe: Probe | None = None) -> Sandbox:
        obj = object.__new__(cls)
        obj._id = info.sandbox_id
        obj._info = info
        obj._returncode = info.returncode
        obj._reason = info.reason
        obj._probe = probe
        obj._detached = False
        obj._main_offsets = {1: 0, 2: 0}
        obj.stdout = StreamReader(obj._main_source(1))
        obj.stderr = StreamReader(obj._main_source(2))
        obj.stdin = StreamWriter(obj._main_stdin)
        obj.filesystem = SandboxFilesystem(obj)
        return obj

    def __repr__(self) -> str:
        return f"Sandbox({self._id})"

    @property
    def object_id(self) -> str:
        return self._id

    def _check(self) -> None:
        if self._detached:
            raise InvalidError("This Sandbox object was detached (`detach()`); get it again with Sandbox.from_id.")

    # --- creating and finding ------------------------------------------------------------------------
    @ClassMethodWithAio
    async def create(cls, *args: str, app: Any = None, name: str | None = None, tags: dict[str, str] | None = None,
                     image: Any = None, env: dict[str, str | None] | None = None, secrets: Sequence[Any] | None = None,
                     network_file_systems: dict | None = None, timeout: int | None = 300,
                     idle_timeout: int | None = None, workdir: str | None = None, gpu: Any = None,
                     cloud: str | None = None, region: str | Sequence[str] | None = None, cpu: Any = None,
                     memory: Any = None, runtime: str | None = None, block_network: bool = False,
                     outbound_cidr_allowlist: Sequence[str] | None = None,
                     outbound_domain_allowlist: Sequence[str] | None = None,
                     inbound_cidr_allowlist: Sequence[str] | None = None, volumes: dict[str, Any] | None = None,
                     pty: bool = False, encrypted_ports: Sequence[int] = (), h2_ports: Sequence[int] = (),
                     unencrypted_ports: Sequence[int] = (), custom_domain: str | None = None, proxy: Any = None,
                     include_oidc_identity_token: bool = False, readiness_probe: Probe | None = None,
                     verbose: bool = False, experimental_options: dict | None = None, client: Any = None,
                     environment_name: str | None = None, pty_info: Any = None,
                     _experimental_enable_snapshot: bool = False) -> Sandbox:
        """Start a sandbox running `args` (or nothing: it sleeps until its `timeout` or `terminate()`)."""
        if not all(isinstance(a, str) for a in args):
            raise InvalidError("Sandbox.create: the command's arguments must be strings")
        if timeout is None:
            raise InvalidError("`timeout=None` is only supported for experimental persistent Sandboxes.")
        if not isinstance(timeout, (int, float)) or timeout <= 0 or timeout > MAX_TIMEOUT:
            raise InvalidError(f"`timeout` must be a number of seconds between 1 and {MAX_TIMEOUT} (24 hours), got {timeout!r}")
        if idle_timeout is not None and (not isinstance(idle_timeout, (int, float)) or idle_timeout <= 0):
            raise InvalidError(f"`idle_timeout` must be a positive number of seconds, got {idle_timeout!r}")
        if workdir is not None and (not isinstance(workdir, str) or not workdir.startswith("/")):
            raise InvalidError(f"workdir must be an absolute path, got: {workdir}")
        if workdir is not None and posixpath.normpath(workdir) != workdir:
            raise InvalidError(f"workdir must be a canonical path (no '..', '.' or '//'), got: {workdir}")
        if isinstance(gpu, (list, tuple)):
            raise InvalidError("Sandboxes do not support configuring a list of GPUs.")
        if gpu is not None:
            raise unimplemented(f"Sandbox.create(gpu={gpu!r})", "GPUs are not available to sandboxes on this backend")
        ports = [*encrypted_ports, *h2_ports, *unencrypted_ports]
        if block_network and ports:
            raise InvalidError("Cannot open ports (`encrypted_ports`, `h2_ports`, `unencrypted_ports`) on a "
                               "Sandbox with `block_network=True`")
        if not all(isinstance(p, int) and 1 <= p <= 65535 for p in ports):
            raise InvalidError(f"Sandbox ports must be integers between 1 and 65535, got {ports!r}")
        value: object  # the options checked below have different types
        for what, value in (("outbound_cidr_allowlist", outbound_cidr_allowlist),
                            ("outbound_domain_allowlist", outbound_domain_allowlist),
                            ("inbound_cidr_allowlist", inbound_cidr_allowlist)):
            if value is not None and (isinstance(value, str) or not all(isinstance(v, str) for v in value)):
                raise InvalidError(f"`{what}` must be a list of strings, got {value!r}")
        if block_network and (outbound_cidr_allowlist is not None or outbound_domain_allowlist is not None):
            raise InvalidError("`block_network=True` blocks all outbound traffic: it cannot be combined with "
                               "`outbound_cidr_allowlist` or `outbound_domain_allowlist`")
        for what, value in (("region", region), ("cloud", cloud), ("runtime", runtime), ("proxy", proxy),
                            ("custom_domain", custom_domain), ("network_file_systems", network_file_systems or None),
                            ("experimental_options", experimental_options or None), ("pty_info", pty_info),
                            ("include_oidc_identity_token", include_oidc_identity_token or None),
                            ("_experimental_enable_snapshot", _experimental_enable_snapshot or None)):
            if value is not None:
                raise unimplemented(f"Sandbox.create({what}=...)")
        if name is not None:
            check_object_name(name, "Sandbox")
        if tags is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
            raise InvalidError("Sandbox tags must be a dict of strings to strings")
        if readiness_probe is not None and not isinstance(readiness_probe, Probe):
            raise InvalidError("readiness_probe must be a modal.Probe (Probe.with_tcp or Probe.with_exec)")
        app_id = getattr(app, "app_id", None) if app is not None else None
        if app is None and not in_container():
            raise InvalidError(
                "Sandboxes require an App when created outside of a Modal container.\n\n"
                "Run an ephemeral App (`with app.run(): ...`), or reference a deployed App using `App.lookup`:\n\n"
                "```\napp = modal.App.lookup('sandbox-app', create_if_missing=True)\n"
                "sb = modal.Sandbox.create(..., app=app)\n```")
        if app is not None and app_id is None:
            raise InvalidError(f"App '{getattr(app, 'name', app)}' is not running: use it inside `with app.run():`, "
                               "or look up a deployed app with `modal.App.lookup(name, create_if_missing=True)`")
        secret_env, secret_refs = split_secrets(secrets)
        env_values = {**secret_env, **{k: v for k, v in (env or {}).items() if v is not None}}
        volume_refs = []
        for path, vol in parse_volumes(volumes).items():  # canonical absolute paths, as for functions
            if vol.name is None:
                raise InvalidError(f"The ephemeral volume for {path} is used outside its `with modal.Volume.ephemeral()` block.")
            volume_refs.append({"path": path, "name": vol.name, "create_if_missing": vol.create_if_missing})
        msg = P.SandboxCreate(
            app_id=app_id, argv=list(args), name=name, tags=tags or {}, timeout=timeout, idle_timeout=idle_timeout,
            workdir=workdir, env=env_values, secret_refs=secret_refs, volumes=volume_refs, pty=pty,
            block_network=block_network, ports=ports, cpu_limit=enforced_limit(cpu, "cpu"),
            memory_limit_mib=enforced_limit(memory, "memory"), outbound_cidr_allowlist=listed(outbound_cidr_allowlist),
            outbound_domain_allowlist=listed(outbound_domain_allowlist),
            inbound_cidr_allowlist=listed(inbound_cidr_allowlist))
        if image is not None and in_container():
            # Built by the control plane with the sandbox: steps that read local files are refused there,
            # since it would read its own machine's files, not this container's.
            msg.image = build_request(image)
        elif image is not None:
            msg.image_id = await build_image(image)
        info = await ask_info(msg, timeout=None)
        sb = cls._from_info(info, readiness_probe)
        sb._unencrypted = set(unencrypted_ports)
        return sb

    @ClassMethodWithAio
    async def from_id(cls, sandbox_id: str, client: Any = None) -> Sandbox:
        """The sandbox with this id (`sb.object_id`), from any process."""
        return cls._from_info(await ask_info(P.SandboxGet(sandbox=sandbox_id)))

    @ClassMethodWithAio
    async def from_name(cls, app_name: str, name: str, *, environment_name: str | None = None,
                        client: Any = None) -> Sandbox:
        """The running sandbox created with `name=` in the deployed app `app_name`."""
        return cls._from_info(await ask_info(P.SandboxFromName(app_name=app_name, name=name)))

    list = _ListMethod()

    # --- state ---------------------------------------------------------------------------------------
    def _update(self, info: P.SandboxInfo) -> None:
        self._info = info
        self._returncode = info.returncode
        self._reason = info.reason

    @property
    def returncode(self) -> int | None:
        """The exit code once `wait()`/`poll()` saw the sandbox finish (124: timed out, 137: terminated);
        None while it runs."""
        return self._returncode

    @aio_method
    async def poll(self) -> int | None:
        self._check()
        self._update(await ask_info(P.SandboxGet(sandbox=self._id)))
        return self._returncode

    @aio_method
    async def wait(self, raise_on_termination: bool = True) -> None:
        """Wait for the sandbox to finish; raises SandboxTimeoutError past its timeout, and
        SandboxTerminatedError if it was terminated (unless `raise_on_termination=False`)."""
        self._check()
        while True:
            info = await ask_info(P.SandboxWait(sandbox=self._id, timeout=50), timeout=None)
            self._update(info)
            if info.returncode is not None:
                break
        if self._reason in ("timeout", "idle"):
            raise SandboxTimeoutError(f"Sandbox {self._id} timed out")
        if self._reason == "terminated" and raise_on_termination:
            raise SandboxTerminatedError(f"Sandbox {self._id} was terminated")

    @aio_method
    async def terminate(self, *, wait: bool = False) -> int | None:
        """Stop the sandbox and everything it started; with `wait=True`, return its exit code (137)."""
        self._check()
        info = await ask_info(P.SandboxTerminate(sandbox=self._id, wait=wait), timeout=None)
        self._update(info)
        return self._returncode if wait else None

    @aio_method
    async def wait_until_ready(self, *, timeout: float = 300) -> None:
        """Wait until the sandbox's readiness probe passes."""
        self._check()
        probe = self._probe
        if probe is None:
            raise InvalidError("Sandbox has no readiness probe: create it with `readiness_probe=modal.Probe...`")
        deadline = time.monotonic() + timeout
        while True:
            try:
                ok = await request(P.SandboxProbe(sandbox=self._id, port=probe.tcp_port,
                                                     argv=list(probe.exec_argv or ())), timeout=max(5.0, timeout))
            except InvalidError:
                info = await ask_info(P.SandboxGet(sandbox=self._id))
                self._update(info)
                if info.returncode is not None:
                    raise SandboxTerminatedError(f"Sandbox {self._id} finished before it was ready "
                                                 f"(return code {info.returncode})") from None
                raise
            if ok:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"Sandbox {self._id} was not ready within {timeout} s")
            await asyncio.sleep(probe.interval_ms / 1000)

    @aio_method
    async def tunnels(self, timeout: int = 50) -> dict[int, Tunnel]:
        """Where each port the sandbox opened (`encrypted_ports`, `unencrypted_ports` ...) can be reached:
        on this machine's loopback, forwarded by the control plane."""
        self._check()
        found = await request(P.SandboxTunnels(sandbox=self._id), timeout=timeout)
        unencrypted: set[int] = getattr(self, "_unencrypted", set())
        out = {}
        for port, host_port in found.items():
            plain = int(port) in unencrypted
            out[int(port)] = Tunnel("127.0.0.1", host_port, "127.0.0.1" if plain else None, host_port if plain else None)
        return out

    @aio_method
    async def set_tags(self, tags: dict[str, str], *, client: Any = None) -> None:
        """Replace the sandbox's tags (used by `Sandbox.list(tags=...)`)."""
        self._check()
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
            raise InvalidError("Sandbox tags must be a dict of strings to strings")
        await request(P.SandboxSetTags(sandbox=self._id, tags=dict(tags)))

    @aio_method
    async def get_tags(self) -> dict[str, str]:
        self._check()
        return dict((await ask_info(P.SandboxGet(sandbox=self._id))).tags)

    def detach(self) -> None:
        """Let go of this sandbox object; the sandbox keeps running until its timeout or terminate."""
        self._detached = True

    @aio_method
    async def reload_volumes(self) -> None:
        """Volumes are the same directory inside as outside on this backend: always current."""
        self._check()

    # --- commands ------------------------------------------------------------------------------------
    @aio_method
    async def exec(self, *cmd: str, stdout: StreamType = StreamType.PIPE, stderr: StreamType = StreamType.PIPE,
                   timeout: int | None = None, workdir: str | None = None, env: dict[str, str | None] | None = None,
                   secrets: Sequence[Any] | None = None, text: bool = True, bufsize: int = -1, pty: bool = False,
                   pty_info: Any = None, _pty_info: Any = None) -> ContainerProcess:
        """Run a command in the sandbox; read its output as it arrives from the returned process."""
        self._check()
        if not cmd or not all(isinstance(c, str) for c in cmd):
            raise InvalidError("Sandbox.exec needs a command, as strings: sb.exec('python', '-c', '...')")
        if workdir is not None and not workdir.startswith("/"):
            raise InvalidError(f"workdir must be an absolute path, got: {workdir}")
        if bufsize not in (-1, 1):
            raise InvalidError("bufsize must be -1 (chunks as they arrive) or 1 (lines)")
        if bufsize == 1 and not text:
            raise InvalidError("bufsize=1 (line buffering) is only supported with text=True")
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            raise InvalidError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if pty_info is not None or _pty_info is not None:
            raise unimplemented("Sandbox.exec(pty_info=...)")
        modes = {StreamType.PIPE: "pipe", StreamType.DEVNULL: "devnull", StreamType.STDOUT: "stdout"}
        if stdout not in (StreamType.PIPE, StreamType.DEVNULL) or stderr not in modes:
            raise InvalidError("stdout must be StreamType.PIPE or DEVNULL; stderr PIPE, DEVNULL or STDOUT")
        secret_env, secret_refs = split_secrets(secrets)
        env_values = {**secret_env, **{k: v for k, v in (env or {}).items() if v is not None}}
        client = await get_client()
        exec_id = f"ex-{_tokens.token_hex(8)}"
        queues, exited, flow = watch_exec(client, self._id, exec_id)
        try:
            await client.request(P.SandboxExec(sandbox=self._id, exec=exec_id, argv=list(cmd), env=env_values,
                                               secret_refs=secret_refs, workdir=workdir, pty=pty,
                                               stdout=modes[stdout], stderr=modes[stderr],  # type: ignore[arg-type]
                                               timeout=timeout), timeout=None)
        except BaseException:
            client.unwatch_call(exec_id)
            raise
        piped = {1: stdout == StreamType.PIPE, 2: stderr == StreamType.PIPE and not pty}
        return ContainerProcess(client, self._id, exec_id, queues, exited, text, bufsize == 1, piped, flow)

    def _main_source(self, fd: int) -> Any:
        async def source() -> bytes | None:
            while True:
                got: P.MainChunk = P.reply_as(await request(P.SandboxMainRead(sandbox=self._id, fd=fd,  # type: ignore[arg-type]
                                                         offset=self._main_offsets[fd]), timeout=None),
                                              P.MainChunk)
                self._main_offsets[fd] = got.offset
                if got.data:
                    return got.data
                if got.eof:
                    return None

        return source

    async def _main_stdin(self, data: bytes, eof: bool) -> None:
        client = await get_client()
        client.send(P.SandboxStdin(sandbox=self._id, exec=P.SANDBOX_MAIN, data=data, eof=eof))
        await client.proto.drain()

    # --- not built -----------------------------------------------------------------------------------
    def snapshot_filesystem(self, *args: Any, **kwargs: Any) -> Any:
        raise unimplemented("Sandbox.snapshot_filesystem", "what a sandbox writes lives in a layer of its own that "
                             "is gone with it, and an image cannot yet be made from one (nor named by id)")

    def snapshot_directory(self, *args: Any, **kwargs: Any) -> Any:
        raise unimplemented("Sandbox.snapshot_directory")

    def mount_image(self, *args: Any, **kwargs: Any) -> Any:
        raise unimplemented("Sandbox.mount_image")

    def unmount_image(self, *args: Any, **kwargs: Any) -> Any:
        raise unimplemented("Sandbox.unmount_image")

    def create_connect_token(self, *args: Any, **kwargs: Any) -> Any:
        raise unimplemented("Sandbox.create_connect_token")

    def open(self, *args: Any, **kwargs: Any) -> Any:
        raise unimplemented("Sandbox.open", "it was removed in Modal 1.6; use `sb.filesystem` "
                             "(read_text, write_text, read_bytes, write_bytes ...)")

    def ls(self, *args: Any, **kwargs: Any) -> Any:
        raise unimplemented("Sandbox.ls", "removed in Modal 1.6; use `sb.filesystem.list_files`")

    def mkdir(self, *args: Any, **kwargs: Any) -> Any:
        raise unimplemented("Sandbox.mkdir", "removed in Modal 1.6; use `sb.filesystem.make_directory`")

    def rm(self, *args: Any, **kwargs: Any) -> Any:
        raise unimplemented("Sandbox.rm", "removed in Modal 1.6; use `sb.filesystem.remove`")
