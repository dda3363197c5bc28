"""The backend interface: start, stop and observe containers. Nothing else crosses it."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Mount:
    """A host directory that appears at `target` inside the container."""

    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class PrivateDir:
    """A host directory no container may see (the control plane's state: its token, the key to the
    secrets, the database, every volume), but for `keep`: paths under it that containers need, which
    appear at their own paths (the control plane's socket, the image environments read-only ...).
    Paths in `keep` that do not exist when a container starts are left out."""

    path: str
    keep: tuple[Mount, ...] = ()


@dataclass(frozen=True)
class TemplateSpec:
    """Start the container as a copy of a template process rather than as a fresh interpreter.

    Containers with equal `key` share a template. `definition` (msgpack bytes) makes it a memory
    snapshot: the template imports the user's code and runs the `snap=True` enter hooks once.
    The template sees the file system its containers see (`mounts`, `rootfs`, as in `ContainerSpec`),
    so what it loads, and what its containers inherit, comes from the same view.
    """

    key: str
    argv: tuple[str, ...]  # the runtime's command; the template runs it with `--template FD`
    env: dict[str, str] = field(default_factory=dict)  # the template's environment (no container's own)
    definition: bytes | None = None
    ttl: float = 600.0  # an unused template is stopped after this many seconds
    cwd: str | None = None  # where the template runs (a snapshot's imports may read relative paths)
    mounts: tuple[Mount, ...] = ()
    rootfs: str | None = None
    # GPU device numbers (/dev/nvidiaN) its containers may be given: their nodes are in its view, but
    # CUDA sees none of them until a container is forked with its own `CUDA_VISIBLE_DEVICES`.
    gpus: tuple[int, ...] = ()


@dataclass(frozen=True)
class Placement:
    """What a container asks of the machine it runs on. The local backend admits by `cpu`/`memory_mib`
    in the scheduler; a cluster backend (Ray) places the container on a node that offers them."""

    cpu: float = 0.125
    memory_mib: int = 128
    gpu: tuple[tuple[str, int], ...] = ()  # the function's `gpu=`: (TYPE, count) options in fallback order
    regions: tuple[str, ...] = ()  # any of these regions (a broad name covers narrow ones: us -> us-east-1)


@dataclass(frozen=True)
class ImageSource:
    """How a container's image was built, for a backend whose nodes build it in their own cache rather
    than use the control plane's: the spec's paths under `root` (the control plane's image directory)
    are the image's, and `steps` (as the control plane planned them, JSON-able) name its layers by the
    same content hashes on every node."""

    image_id: str
    root: str
    steps: tuple[dict, ...]


@dataclass(frozen=True)
class ContainerSpec:
    container_id: str
    app_id: str
    function_tag: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    memory_limit_mib: int | None = None
    cpu_limit: float | None = None
    mounts: tuple[Mount, ...] = ()  # volumes, at the absolute paths the user gave
    rootfs: str | None = None  # a root file system image to run under (apt_install, run_commands)
    template: TemplateSpec | None = None  # a backend that cannot fork from templates ignores this
    # The host's file system is read-only inside, /tmp private; only `mounts` can be written (a build
    # step of an image without its own root file system, which must not write to the host).
    host_read_only: bool = False
    # Its own network namespace (only loopback): a `web_server` listens on its port in every replica.
    # The backend sets `ENV_PRIVATE_NETWORK=1` in the container's environment only when it gave it one;
    # where it cannot, it says why to the container's output and starts it in the machine's network.
    private_network: bool = False
    # The GPUs it holds, by device number (/dev/nvidiaN): its view has their nodes and the driver's
    # control nodes and libraries, and no other GPU's node (the control plane sets CUDA_VISIBLE_DEVICES).
    gpus: tuple[int, ...] = ()
    placement: Placement = field(default_factory=Placement)
    # Where the user's code is (its sys.path, module directory, working directory): kept in view of a
    # container isolated from the host (read-only), although the host's other files may not be.
    code: tuple[str, ...] = ()
    # Set for a backend that `spans_machines`: its nodes build the image where they run it.
    image: ImageSource | None = None


@dataclass(frozen=True)
class ExitInfo:
    returncode: int | None
    signal: int | None  # set when the container was killed by a signal
    oom_limit_mib: int | None = None  # set when the kernel killed it for exceeding its memory limit

    def describe(self) -> str:
        """What happened, to follow "container X ...": "ran out of memory (...) and was killed"."""
        if self.oom_limit_mib is not None:
            return f"ran out of memory (memory limit {self.oom_limit_mib} MiB) and was killed"
        if self.signal is not None:
            import signal as _signal

            try:
                name = _signal.Signals(self.signal).name
            except ValueError:
                name = str(self.signal)
            return f"killed by signal {name}"
        return f"exited with code {self.returncode}"

    def hint(self) -> str | None:
        """What the user can change so that it does not happen again, as a sentence."""
        if self.oom_limit_mib is not None:
            return "Raise the limit with `memory=(request, limit)`, or use less memory per input."
        return None


OutputCallback = Callable[[str, int, bytes], None]  # (container_id, fd 1|2, line)
ExitCallback = Callable[[str, ExitInfo], None]


class Backend(abc.ABC):
    """Runs containers. Callbacks are invoked on the control plane's event loop."""

    name: str

    @abc.abstractmethod
    async def start(self, spec: ContainerSpec, on_output: OutputCallback, on_exit: ExitCallback) -> int:
        """Start the container; return its pid (or another handle number) once the process exists."""

    @abc.abstractmethod
    async def stop(self, container_id: str, grace: float) -> None:
        """Ask the container to stop; kill it after `grace` seconds. Returns without waiting for exit."""

    @abc.abstractmethod
    async def kill(self, container_id: str) -> None:
        """Kill the container now."""

    @abc.abstractmethod
    async def close(self, grace: float) -> None:
        """Stop every container and wait for them to exit."""

    async def prepare(self, template: TemplateSpec) -> None:  # noqa: B027 - optional for backends
        """Get a template ready ahead of the first container that uses it (optional)."""

    def where(self, container_id: str) -> str | None:
        """The node a container runs on, for a backend of more than one machine."""
        return None

    # Whether `region=` means something here: a backend of one machine has no regions to choose from.
    places_by_region: bool = False

    # Whether containers may run on other machines than the control plane's (what they need from its
    # disk must then be on storage every node sees: volumes under HOMEPORT_SHARED_ROOT).
    spans_machines: bool = False
    # Whether it gives containers the GPUs they ask for (`ContainerSpec.placement.gpu`) itself.
    places_gpus: bool = False

    def capacity(self) -> tuple[float, int] | None:
        """(cores, MiB) that containers may request in all, where that is not this machine's (a
        cluster's, which changes as nodes join and leave: asked again on every scheduler tick, so it
        must answer at once); None: the control plane's machine."""
        return None

    def listen_default(self) -> str | None:
        """`HOST:PORT` where the control plane listens on TCP for this backend's containers unless told
        (`HOMEPORT_LISTEN`); None: they all run on this machine and use its Unix socket."""
        return None

    def describe(self) -> dict[str, object]:
        return {"name": self.name}
