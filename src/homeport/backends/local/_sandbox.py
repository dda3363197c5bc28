"""How a container's process is wrapped so that it sees its own file system view.

`command(spec, hide)` turns the container's argv into the argv the local backend executes (`wrap` does
the same for a template process, which its containers then inherit the view from). A container runs
under bubblewrap in its own mount namespace: the root is a fresh tmpfs into which the host's top-level
directories are bound, so a volume appears at exactly the path the user gave (`/data`, `/cache` ...)
even where the host has no such directory, and nothing is created on the host; the control plane's
state directory is hidden there (`hide`, see `_private`). With neither mounts nor anything to hide
it runs directly.

bubblewrap exits at once on SIGTERM without passing it on, so it runs with SIGTERM ignored (inherited
through exec; the runtime installs its own handler): the backend's SIGTERM to the process group then
reaches the runtime, which runs the exit hooks, and bubblewrap leaves when the runtime does.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Sequence

from .._base import ContainerSpec, Mount
from . import _gpu, _private, _rootfs
from ._gpu import DevEntry
from ._private import Plan

_SPECIAL = {"proc", "dev", "sys", "tmp"}


class SandboxUnavailable(Exception):
    pass


def needs_sandbox(spec: ContainerSpec) -> bool:
    """Whether the container cannot run at all without its sandbox (it still runs without `hide`)."""
    return bool(spec.mounts or spec.rootfs or spec.host_read_only)


def sandboxed(spec: ContainerSpec, hide: Plan | None = None, dev: Sequence[DevEntry] | None = None) -> bool:
    return (needs_sandbox(spec) or hide is not None
            or bool((spec.private_network or dev is not None) and shutil.which("bwrap")))


def network_note(reason: str) -> str:
    """What the user should know when a container cannot get the network of its own it asked for."""
    return (f"homeport: this container has no network of its own ({reason}), so its web server shares the "
            "machine's network: one container at a time can serve its port, and the server can be reached "
            "on this machine without the gateway (and its proxy auth); install bubblewrap "
            "(`apt-get install bubblewrap`) on a machine that allows user namespaces to give every container "
            "its own network\n")


def command(spec: ContainerSpec, hide: Plan | None = None, dev: Sequence[DevEntry] | None = None,
            isolates_itself: bool = False, uid: int | None = None) -> list[str]:
    # A container (not an image build step) under bubblewrap gets a PID namespace of its own too, and
    # the host's directories read-only but for /tmp and its volumes, unless isolation is turned off
    # (HOMEPORT_ISOLATION=0).
    isolated = not spec.host_read_only and os.environ.get("HOMEPORT_ISOLATION", "1") != "0"
    return wrap(spec.argv, spec.mounts, spec.rootfs, spec.cwd, host_read_only=spec.host_read_only, hide=hide,
                private_network=spec.private_network, dev=dev, isolated=isolated, code=spec.code,
                isolates_itself=isolates_itself, uid=uid)


def wrap(argv: Sequence[str], mounts: Sequence[Mount], rootfs: str | None, cwd: str | None,
         host_read_only: bool = False, hide: Plan | None = None, private_network: bool = False,
         dev: Sequence[DevEntry] | None = None, isolated: bool = False, code: Sequence[str] = (),
         isolates_itself: bool = False, uid: int | None = None, template: bool = False) -> list[str]:
    """The argv that runs `argv` in the view of a container (or template) with these mounts and root.

    `host_read_only`: the host's directories are read-only and /tmp is private (an image build step
    that must not write to the host); only `mounts` that are not read-only can be written.
    `hide`: a directory covered by an empty one but for the paths it keeps (`_private.plan`).
    `private_network`: a network namespace of its own, with only loopback.
    `dev`: /dev built from these entries (`_gpu.dev_entries`: no GPU node it was not given) rather than
    the host's; None where the host has no GPU nodes to keep from it.
    `isolates_itself`: the runtime drops its privilege itself (`homeport.runtime._spawned`, told so in
    its environment): bubblewrap leaves it, rather than mapping the control plane's user into a user
    namespace of its own.
    `uid`, `template`: a root file system's container runs as this host user of its own (or, for a
    template of the image, its containers do; see `_rootfs`).
    """
    if rootfs:  # the image's own root file system, mounts bound into it
        return _rootfs.wrap(argv, rootfs, mounts, private_network, dev=dev, uid=uid, template=template)
    if not mounts and not host_read_only and hide is None and not private_network and dev is None:
        return list(argv)
    bwrap = shutil.which("bwrap")
    if bwrap is None and not mounts and not host_read_only and hide is None:
        # only the network or the GPU nodes were asked for: the backend tells the user (`network_note`);
        # CUDA_VISIBLE_DEVICES alone keeps a container to its GPUs then
        return list(argv)
    if bwrap is None:
        what = ("volumes are mounted with" if mounts else "Image.run_function() steps run under" if host_read_only
                else "the control plane's state directory is hidden from containers with")
        raise SandboxUnavailable(
            f"{what} bubblewrap, which is not installed on this machine; "
            "install it (Debian/Ubuntu: `apt-get install bubblewrap`) and try again"
        )
    net = ["--unshare-net"] if private_network else []
    pids = ["--unshare-pid"] if isolated else []
    if not mounts and not host_read_only and hide is None and dev is None:  # only a network of its own: the host's files as they are
        chdir = ["--chdir", cwd] if cwd else []
        view = (["--ro-bind", "/", "/", "--dev-bind", "/dev", "/dev", "--proc", "/proc", "--bind", "/tmp", "/tmp"]
                if isolated else ["--dev-bind", "/", "/"])
        return ["sh", "-c", 'trap "" TERM; exec "$@"', "sh", bwrap, *view, *net, *pids, *chdir, "--", *argv]
    host = "--ro-bind" if host_read_only or isolated else "--dev-bind"
    args = [bwrap, *net, *pids, "--tmpfs", "/"]
    for entry in sorted(os.listdir("/")):
        path = "/" + entry
        if entry in _SPECIAL:
            continue
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += [host, path, path]
    if host_read_only:
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--setenv", "TMPDIR", "/tmp"]
        # What the container runs from (the runtime's packages, the user's code) may live under the
        # host's /tmp, which it does not see: those stay in view, read-only.
        for path in code:
            if os.path.exists(path) and (path == "/tmp" or path.startswith("/tmp/")):
                args += ["--ro-bind", path, path]
    else:
        devs = ["--dev-bind", "/dev", "/dev"] if dev is None else _gpu.bwrap_dev_args(dev)
        # A template gets the host's /proc as it is (it runs as the control plane's user, in the host's
        # PID namespace, as a template without mounts does): bubblewrap's own /proc has read-only
        # mounts over parts of it, and the kernel lets a user namespace mount a /proc of its own only
        # where one is fully visible, so a memory snapshot could not isolate itself (`_copyusers`).
        proc = ["--bind", "/proc", "/proc"] if template else ["--proc", "/proc"]
        args += [*proc, *devs, "--bind", "/tmp", "/tmp"]
    if os.path.isdir("/sys"):
        args += ["--ro-bind", "/sys", "/sys"]
    if hide is not None:  # before the mounts: some have their targets under it (an image build's own directory)
        args += _private.bwrap_args(hide, lock=not isolates_itself)
    for m in sorted(mounts, key=lambda m: m.target.count("/")):
        if os.path.isdir(m.source):  # a file (an image's `add_local_file`) gets a file mount point
            args += ["--dir", m.target]
        args += ["--ro-bind" if m.read_only else "--bind", m.source, m.target]
    if host_read_only:
        args += ["--remount-ro", "/"]  # no new top-level directory either (it would vanish unseen)
    if cwd:
        args += ["--chdir", cwd]
    return ["sh", "-c", 'trap "" TERM; exec "$@"', "sh", *args, "--", *argv]


async def bwrap_fails(**options: object) -> str | None:
    """None if bubblewrap runs a command with these `wrap` options on this machine, else why not."""
    try:
        argv = wrap(["true"], (), None, None, **options)  # type: ignore[arg-type]
        probe = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _out, err = await probe.communicate()
    except (OSError, SandboxUnavailable) as exc:
        return str(exc)
    if probe.returncode == 0:
        return None
    return f"bubblewrap fails here: {err.decode(errors='replace').strip() or f'exit code {probe.returncode}'}"
