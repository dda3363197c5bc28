"""The Debian root file system that images with `apt_install` or `run_commands` are built on.

Made once per machine with `debootstrap --variant=minbase` from Debian's own packages (the suite this
machine runs, else bookworm), plus the shared libraries an interpreter from this machine loads, and
kept in a cache shared by every control plane of the user (`$HOMEPORT_ROOTFS_DIR`, else
`~/.cache/homeport/rootfs`). Image layers on top of it are overlay upper directories (see
`homeport.image_builder.sandboxed`); containers run in it through the local backend (`backends/local/_rootfs`).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from .interpreters import Usable

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SUITE = "bookworm"
# What an interpreter built on a Debian machine (pyenv's, uv's) loads from the system.
INTERPRETER_LIBS = (
    "ca-certificates", "libssl3", "libffi8", "libsqlite3-0", "libbz2-1.0", "liblzma5", "zlib1g", "libexpat1",
    "libncursesw6", "libreadline8", "libgdbm6", "libgdbm-compat4", "libuuid1", "libnsl2", "libtirpc3",
)
DEBIAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Interpreters installed here belong to the machine's own root file system: not bindable into an image's.
SYSTEM_PREFIXES = ("/", "/usr", "/usr/local")


class RootfsUnavailable(Exception):
    """This machine cannot make or run root file system images; the message says what is missing."""


def cache_dir() -> Path:
    env = os.environ.get("HOMEPORT_ROOTFS_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "homeport" / "rootfs"


def host_suite() -> str:
    """This machine's Debian suite, so that its interpreters find the libraries they were built with."""
    try:
        fields = dict(
            line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line
        )
    except OSError:
        return DEFAULT_SUITE
    if fields.get("ID", "").strip('"') == "debian" and fields.get("VERSION_CODENAME"):
        return fields["VERSION_CODENAME"].strip('"')
    return DEFAULT_SUITE


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")


def missing() -> str | None:
    """What this machine lacks to build and run root file system images, or None."""
    if not sys.platform.startswith("linux"):
        return "root file system images need Linux (mount namespaces and overlayfs)"
    lacking = [tool for tool in ("unshare", "mount", "chroot") if _which(tool) is None]
    if lacking:
        return f"the tools {', '.join(lacking)} (util-linux, coreutils) are not installed"
    if _which("debootstrap") is None:
        return "`debootstrap` is not installed: install it from Debian's packages (`apt-get install debootstrap`)"
    if os.geteuid() != 0:
        return "making the Debian base with debootstrap needs root; run the control plane as root"
    return namespaces_problem()


_probed: dict[tuple[str, int], str | None] = {}  # (unshare, uid) -> what is wrong, once per process


def namespaces_problem() -> str | None:
    """Whether this machine lets us make the mount namespace a root file system image runs in: a
    trivial `unshare --mount` run, tried once and remembered. None, or what is wrong and what to do."""
    unshare = _which("unshare") or "unshare"
    key = (unshare, os.geteuid())
    if key not in _probed:
        argv = [unshare, "--mount", "--propagation", "private"]
        if os.geteuid() != 0:
            argv += ["--user", "--map-root-user"]
        argv += ["--", "/bin/sh", "-c", ":"]
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            failure = None if out.returncode == 0 else (out.stderr or out.stdout).strip() or f"exit code {out.returncode}"
        except (OSError, subprocess.TimeoutExpired) as exc:
            failure = str(exc)
        _probed[key] = None if failure is None else (
            f"mount namespaces do not work here (`{' '.join(argv[:-4])}` failed: {failure}). Root file "
            "system images run in one: inside a container, give it the right to (Docker: --privileged, or "
            "a seccomp profile and capabilities that allow unshare and mount); as a user, enable "
            "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, or "
            "kernel.apparmor_restrict_unprivileged_userns=0)"
        )
    return _probed[key]


class DebianBase:
    def __init__(self, root: Path | None = None, mirror: str | None = None, suite: str | None = None) -> None:
        self.root = root or cache_dir()
        self.mirror = mirror or os.environ.get("HOMEPORT_DEBIAN_MIRROR") or DEFAULT_MIRROR
        self.suite = suite or host_suite()
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
        self.arch = arch
        key = hashlib.sha256(f"{self.suite}|{arch}|{self.mirror}|{','.join(INTERPRETER_LIBS)}".encode()).hexdigest()[:16]
        self.name = f"debian-{self.suite}-{arch}-{key}"
        self.path = self.root / self.name

    @property
    def ready(self) -> bool:
        return (self.path / ".homeport-base-ok").exists()

    async def ensure(self, run: Callable[..., Awaitable[object]], out: Callable[[str, int], None]) -> Path:
        """The base tree, made now if it is not cached (about 30 s; one build at a time per machine).
        `run(argv, out, what, env=..., timeout=...)` runs a command streaming its output."""
        if self.ready:
            problem = await asyncio.to_thread(namespaces_problem)  # made once, but is it usable here?
            if problem:
                raise RootfsUnavailable(problem)
            return self.path
        problem = await asyncio.to_thread(missing)
        if problem:
            raise RootfsUnavailable(problem)
        self.root.mkdir(parents=True, exist_ok=True)
        lock = await asyncio.to_thread(open, self.root / f"{self.name}.lock", "w")
        try:
            await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
            if self.ready:
                return self.path
            out(f"Making the Debian {self.suite} base file system (once per machine) from {self.mirror}", 1)
            tmp = self.root / f".tmp-{self.name}-{uuid.uuid4().hex[:8]}"
            try:
                await run(
                    [_which("debootstrap") or "debootstrap", "--variant=minbase", f"--arch={self.arch}",
                     f"--include={','.join(INTERPRETER_LIBS)}", self.suite, str(tmp), self.mirror],
                    out, "debootstrap", env={"PATH": DEBIAN_PATH, "LANG": "C.UTF-8"}, timeout=1800.0,
                )
                (tmp / "etc" / "apt" / "apt.conf.d" / "90homeport").write_text(
                    'APT::Install-Recommends "false";\nAPT::Sandbox::User "root";\n'
                )
                (tmp / ".homeport-base-ok").write_text(self.name)
                if self.path.exists():
                    await asyncio.to_thread(shutil.rmtree, self.path, True)
                os.rename(tmp, self.path)
            finally:
                if tmp.exists():
                    await asyncio.to_thread(shutil.rmtree, tmp, True)
            return self.path
        finally:
            lock.close()


def carriable(python: str) -> bool:
    """Whether an interpreter can be bound into an image's own root file system: one installed under
    a directory of its own (pyenv, uv), not the machine's system Python."""
    return os.path.dirname(os.path.dirname(os.path.realpath(python))) not in SYSTEM_PREFIXES


ROOTFS_INTERPRETERS = Usable(
    accepts=lambda i: carriable(i.path),
    images="images with apt_install or run_commands",
    why_not="is the machine's system Python, which cannot be carried into an image's own root file system",
)


def interpreter_prefix(python: str) -> str:
    """The installation directory of an interpreter (bound into images that have a root file system)."""
    if not carriable(python):
        raise RootfsUnavailable(
            f"the image's interpreter {python} is the machine's system Python, which cannot be carried into "
            "an image's own root file system; use a Python installed under its own directory (pyenv, or "
            "`uv python install`) for images with apt_install or run_commands"
        )
    return os.path.dirname(os.path.dirname(os.path.realpath(python)))
