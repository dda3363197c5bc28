"""Starting a sandbox's container: its record, its image, its network, its container spec, its tunnels.

`sandboxes.Sandboxes` drives a sandbox once it runs (clients' operations, its agent, its end); this
module is what it starts with, the sandbox's counterpart of `launch.Launcher` for functions. A sandbox
runs `homeport.runtime._sandbox_agent` in an image built like a function's (`functions.FunctionSetup`);
what code inside a container may ask for as a sandbox's image is `container_image_refusal`'s to say.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import posixpath
import secrets
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

from .. import _protocol as P
from .._address import is_tcp
from .._wire import FramedProtocol, relay
from ..backends import ContainerSpec, Mount
from ..exception import AuthError, ImageBuildError, InvalidError
from .egress import EGRESS_PORT, EgressProxy, Network, Policy, parse_cidrs, proxy_environ
from .functions import FunctionSetup
from .images import ImageBuildFailed, ImageUnsupported
from .launch import Launcher
from .records import Peer

# What a sandbox's image may ask for when code in a container asks: each build step that the control
# plane runs like any other (`pip_install` and `uv_pip_install` confined to a build container, see
# `homeport.image_builder.install._install_confined`; apt and shell commands in the image's own root file system), and
# the parameters it names. Everything else names files of the requester (`add_local_*`, requirements
# files, `run_function`'s module), which the control plane would read from its own disk instead.
_CONTAINER_IMAGE_STEPS: dict[str, frozenset[str]] = {
    "debian_slim": frozenset({"python_version", "force_build"}),
    "env": frozenset({"vars"}),
    "workdir": frozenset({"path"}),
    "pip_install": frozenset({"packages", "index_url", "extra_index_url", "find_links", "pre", "extra_options",
                              "force_build", "gpu", "env", "secrets", "secret_refs", "_secret_env"}),
    "uv_pip_install": frozenset({"packages", "requirements", "index_url", "extra_index_url", "find_links", "pre",
                                 "extra_options", "force_build", "gpu", "env", "secrets", "secret_refs",
                                 "_secret_env", "uv_version"}),
    "apt_install": frozenset({"packages", "force_build", "gpu", "env", "secrets", "secret_refs", "_secret_env"}),
    "run_commands": frozenset({"commands", "force_build", "gpu", "env", "secrets", "secret_refs", "_secret_env"}),
}
_LOCAL_FILE_STEPS = frozenset({"add_local_file", "add_local_dir", "add_local_python_source",
                               "pip_install_from_requirements", "pip_install_from_pyproject", "run_function"})


def container_image_refusal(request: Any) -> str | None:
    """Why the image that code in a container asks for (`Sandbox.create(image=...)`) is refused, or None.
    The request becomes one the control plane builds confined (`_confined` on each step)."""
    steps = request.get("steps") if isinstance(request, dict) else None
    if not isinstance(steps, list) or not steps or not all(isinstance(s, dict) for s in steps):
        return "malformed image request: `steps` must be a list of build steps"
    for i, step in enumerate(steps, 1):
        kind = step.get("kind")
        if kind in _LOCAL_FILE_STEPS:
            return (f"Image.{kind}() cannot be built for a sandbox created inside a container (step {i}): it reads "
                    "local files, and the control plane building the image would read them from its own machine's "
                    "disk, not from this container's. Put the files in the sandbox with "
                    "`sb.filesystem.write_bytes`/`copy_from_local`, or in a Volume both mount.")
        allowed = _CONTAINER_IMAGE_STEPS.get(kind)
        if allowed is None:
            return f"Image step {kind!r} (step {i}) cannot be built for a sandbox created inside a container"
        extra = sorted(k for k in step if k not in ("kind", "_confined") and k not in allowed)
        if extra:
            return f"Image step {kind} (step {i}) has parameters a container may not set: {', '.join(map(str, extra))}"
        if step.get("secret_refs"):
            return ("a container may not give a sandbox's image named secrets (`Secret.from_name`); pass the values "
                    "its function has with `modal.Secret.from_dict(...)`")
        if kind == "uv_pip_install" and step.get("requirements"):
            return (f"uv_pip_install(requirements=...) (step {i}) reads local requirements files, which the control "
                    "plane would read from its own disk: list the packages instead")
        step["_confined"] = True
    return None



@dataclass(eq=False)
class SandboxRecord:
    sandbox_id: str
    app_id: str
    name: str | None
    tags: dict[str, str]
    token: str
    timeout: float
    idle_timeout: float | None
    ports: list[int]
    config: P.SandboxCreate
    created_at: float = field(default_factory=time.time)
    pid: int | None = None
    proto: FramedProtocol | None = None
    connected: asyncio.Future | None = None
    exited: asyncio.Future | None = None  # result: the return code
    returncode: int | None = None
    reason: str | None = None  # "timeout" | "terminated" | "idle" once the control plane ends it
    execs: dict[str, Peer] = field(default_factory=dict)  # running execs -> the client that reads them
    pending: dict[int, asyncio.Future] = field(default_factory=dict)  # requests to the agent
    main_out: dict[int, bytearray] = field(default_factory=lambda: {1: bytearray(), 2: bytearray()})
    main_dropped: dict[int, int] = field(default_factory=lambda: {1: 0, 2: 0})
    main_done: bool = False
    main_changed: asyncio.Event = field(default_factory=asyncio.Event)
    last_active: float = field(default_factory=time.monotonic)
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    tunnels: dict[int, tuple[asyncio.AbstractServer, int]] = field(default_factory=dict)
    scratch: str | None = None  # a writable directory bound at `workdir`, removed at exit
    startup_error: str | None = None
    stdin_backlog: list[P.AgentStdin] = field(default_factory=list)
    greeted: bool = False  # its agent said hello (accepted once)
    egress: EgressProxy | None = None  # its way out of a network of its own
    inbound: list[Network] | None = None  # inbound_cidr_allowlist: who may use its tunnels

    @property
    def running(self) -> bool:
        return self.returncode is None


class SandboxLauncher:
    """Builds what a sandbox's container starts from, and releases it when the sandbox has exited."""

    def __init__(self, function_setup: FunctionSetup, launcher: Launcher, web_dir: str, scratch: str,
                 address: str) -> None:
        self.function_setup = function_setup
        self.launcher = launcher
        self.web_dir = web_dir  # each sandbox's own directory of it holds its tunnels' and egress' sockets
        self.scratch = scratch
        self.address = address  # what containers connect to: the Unix socket, or tcp://HOST:PORT

    def environment(self, secret_refs: Any, env: Any) -> dict[str, str]:
        """A sandbox's (or an exec's) environment: its named secrets, then `env=`."""
        return self.function_setup.function_env({"secret_refs": secret_refs, "env": env})

    async def network(self, rec: SandboxRecord, msg: P.SandboxCreate) -> None:
        """Its allowlists, and the proxy that is its way out (see `egress`) unless it has no network."""
        try:
            cidrs = parse_cidrs(msg.outbound_cidr_allowlist, "outbound_cidr_allowlist") \
                if msg.outbound_cidr_allowlist is not None else None
            if msg.inbound_cidr_allowlist is not None:
                rec.inbound = parse_cidrs(msg.inbound_cidr_allowlist, "inbound_cidr_allowlist")
        except ValueError as exc:
            raise InvalidError(str(exc)) from None
        domains = msg.outbound_domain_allowlist
        if domains is not None and not all(isinstance(d, str) and d for d in domains):
            raise InvalidError("outbound_domain_allowlist must be a list of domain names")
        if msg.block_network or not self.own_networks():
            return
        # In its own directory of the shared one (the rest is read-only to it: see the local backend's `_private`)
        os.makedirs(os.path.join(self.web_dir, rec.sandbox_id), mode=0o700, exist_ok=True)
        path = os.path.join(self.web_dir, rec.sandbox_id, "egress")
        rec.egress = EgressProxy(path, Policy(list(domains) if domains is not None else None, cidrs),
                                 secrets.token_urlsafe(16))
        await rec.egress.start()

    def own_networks(self) -> bool:
        """Whether sandboxes get a network of their own: not where containers reach the control plane
        over TCP (on other machines, e.g. a Ray cluster), since from one only its Unix socket is reached."""
        return not is_tcp(self.address)

    async def build_image(self, peer: Peer, request: dict[str, Any]) -> str:
        """Build the image a container asked for (refused in `access` if it names local files; every step
        confined), streaming the build's log to it as a client's image build does."""
        if peer.container_id is not None:
            why = container_image_refusal(request)  # also checked in `access`, before any work
            if why is not None:
                raise AuthError(why)

        def on_log(image: str, line: str, fd: int) -> None:
            peer.proto.send(P.Log(fn="image", cid=image, fd=fd, data=line))

        try:
            return (await self.function_setup.build_images([request], on_log))[0]
        except (ImageBuildFailed, ImageUnsupported) as exc:
            raise ImageBuildError(str(exc)) from None

    async def spec(self, rec: SandboxRecord, msg: P.SandboxCreate) -> ContainerSpec:
        launcher = self.launcher
        image = launcher.images.get(msg.image_id) if msg.image_id else await launcher.images.default_image()
        # The platform's own names (`P.PLATFORM_ENV`) are set below, never from `env=` or an image's.
        env = P.user_environment({**launcher.image_environ(image), **self.environment(msg.secret_refs, msg.env)})
        # Every sandbox has a network of its own where the machine allows (its ports its own, the
        # machine's services out of reach; not with containers over TCP, see `_own_networks`); outbound
        # it has the egress proxy, none with block_network.
        # Where it does not, it shares the machine's network, but for what needs its own to be real
        # (`network_required`: block_network, the allowlists), which it refuses to run without.
        allowlists = msg.outbound_cidr_allowlist is not None or msg.outbound_domain_allowlist is not None
        agent_config = {"argv": list(msg.argv), "pty": msg.pty,
                        "block_network": msg.block_network, "workdir": msg.workdir,
                        "network_required": msg.block_network or allowlists,
                        "tunnels": {str(p): self.socket(rec, p) for p in rec.ports}}
        if rec.egress is not None:
            agent_config["egress"] = {"socket": rec.egress.path, "port": EGRESS_PORT,
                                      "token": rec.egress.token.decode(), "env": proxy_environ()}
        env.update({
            "PYTHONUNBUFFERED": "1",
            # A network of its own reaches no TCP address: the Unix socket, on this machine.
            P.ENV_SERVER_ADDRESS: launcher.socket_path if self.own_networks() else self.address,
            P.ENV_CONTAINER_ID: rec.sandbox_id,
            P.ENV_CONTAINER_TOKEN: rec.token,
            P.ENV_MODAL_IMAGE_ID: image.image_id,
            "MODAL_SANDBOX_ID": rec.sandbox_id,
            P.ENV_SANDBOX: json.dumps(agent_config),
            P.ENV_RUNTIME_PATH: launcher.images.runtime_path(),
        })
        mounts = image.container_mounts()
        mounts += [Mount(host, target) for host, target in self.function_setup.function_mounts({"volumes": msg.volumes})]
        workdir = msg.workdir
        if workdir is not None and (not isinstance(workdir, str) or not workdir.startswith("/")
                                    or posixpath.normpath(workdir) != workdir):
            raise InvalidError(f"workdir must be a canonical absolute path, got: {workdir!r}")
        rootfs = image.rootfs(workdir or image.cwd(None))
        cwd = None
        if rec.ports:  # its own directory of the shared one, where its tunnels' sockets are (`_socket`)
            os.makedirs(os.path.join(self.web_dir, rec.sandbox_id), mode=0o700, exist_ok=True)
        if rootfs is not None:
            mounts += image.rootfs_mounts([], launcher.socket_path, launcher.images.runtime_path())
            own = os.path.join(self.web_dir, rec.sandbox_id)  # its tunnels' and its egress proxy's sockets
            os.makedirs(own, mode=0o700, exist_ok=True)
            mounts.append(Mount(own, own))
        else:
            cwd = image.cwd(None) or "/"
            exists = os.path.isdir(workdir) if workdir else True  # noqa: ASYNC240 - one stat
            top = "/" + workdir.strip("/").split("/")[0] if workdir else "/"
            if workdir and not exists and top != "/tmp" and os.path.exists(top):  # noqa: ASYNC240
                raise InvalidError(
                    f"workdir {workdir} cannot be made: {top} is this machine's directory, read-only in a sandbox "
                    "whose image has no root file system of its own; use a new top-level directory (/app), one "
                    "under /tmp, or an image with its own root file system (apt_install, run_commands)")
            if workdir and not exists and top != "/tmp" and not any(m.target == workdir for m in mounts):
                # The host is read-only inside: a working directory of its own, gone with the sandbox.
                rec.scratch = os.path.join(self.scratch, f"{rec.sandbox_id}-workdir")
                os.makedirs(rec.scratch, mode=0o700)
                mounts.append(Mount(rec.scratch, workdir))
        python = image.argv()[0]
        return ContainerSpec(
            container_id=rec.sandbox_id, app_id=rec.app_id, function_tag="sandbox",
            argv=(python, "-m", "homeport.runtime._sandbox_agent"), env=env, cwd=cwd,
            memory_limit_mib=msg.memory_limit_mib, cpu_limit=msg.cpu_limit,
            mounts=tuple(mounts), rootfs=rootfs,
            # What the sandbox writes stays in it: the host's directories are read-only, /tmp its own
            # (but for the runtime's packages, which may be under the host's /tmp).
            host_read_only=rootfs is None,
            code=launcher.images.runtime_sources(env.get(P.ENV_RUNTIME_PATH, "")) if rootfs is None else (),
            private_network=self.own_networks() or msg.block_network,
        )

    def socket(self, rec: SandboxRecord, port: int) -> str:
        return os.path.join(self.web_dir, rec.sandbox_id, f"p{port}")  # in its own directory (`_spec`)

    async def open_tunnel(self, rec: SandboxRecord, port: int) -> None:
        path = self.socket(rec, port)

        async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if rec.inbound is not None and not _peer_allowed(writer, rec.inbound):
                writer.close()
                return
            await relay(reader, writer, lambda: asyncio.open_unix_connection(path))

        server = await asyncio.start_server(forward, "127.0.0.1", 0)
        rec.tunnels[port] = (server, server.sockets[0].getsockname()[1])

    def release(self, rec: SandboxRecord) -> None:
        """What its container had outside itself: its tunnels, its egress proxy, its sockets, its scratch."""
        for server, _port in rec.tunnels.values():
            server.close()
        if rec.egress is not None:
            rec.egress.close()
        for port in rec.ports:
            with contextlib.suppress(OSError):
                os.unlink(self.socket(rec, port))
        if rec.scratch:
            shutil.rmtree(rec.scratch, ignore_errors=True)


def _peer_allowed(writer: asyncio.StreamWriter, networks: list[Network]) -> bool:
    peer = writer.get_extra_info("peername")
    try:
        addr = ipaddress.ip_address(peer[0])
    except (TypeError, ValueError, IndexError):
        return False
    return any(addr in net for net in networks)
