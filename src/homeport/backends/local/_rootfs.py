"""Run a container inside a root file system image (`ContainerSpec.rootfs`): the image's Debian tree.

`ContainerSpec.rootfs` is a JSON object:

    {"lower": [dir, ...],   overlay layers, top first (the image's layers, then the Debian base)
     "upper": dir | null,   where writes go; null: a fresh tmpfs, gone when the container exits
     "work": dir | null,    the overlay's work directory (beside `upper`)
     "scratch": dir,        an empty host directory to mount the new root (and its tmpfs) on
     "cwd": path}           the working directory inside the new root

When the control plane is root and containers are isolated (`uid` given, `isolated_root`), a
container runs as `unshare --mount --pid --fork`, then `python -I -m homeport.runtime._newroot`: its root
assembled from the image's layers idmapped to its own unprivileged host user, which it becomes (root
only in a user namespace of its own), in a PID namespace of its own; a template of the image runs the
same way but stays host root and keeps the layers in view, for each container forked from it to
assemble its own root (see `homeport.runtime._newroot`). A web container's socket directory is
out of its view but for its own `<dir>/<container id>` (`own_web_entry`).

Otherwise (an image build step, which installs packages as root into its layer; a control plane that
is not root; HOMEPORT_ISOLATION=0) it runs as `unshare --mount --pid --fork` (plus `--user
--map-root-user` when not root), a fixed shell script that mounts the overlay, a /dev of its own with
only the harmless nodes, /proc with the kernel's settings read-only, a read-only /sys and `spec.mounts`
(host paths bound at their targets), and then `ENTER`: chroot, and root's capabilities cut to what
installing packages needs, so that neither the chroot nor a mount can be undone. Code in a container can
ask for such an image (`Sandbox.create(image=...)`), so a build step is a boundary like a container.
Every step execs, so the pid the backend watches and signals is `unshare --fork`'s, which waits for
the container's own process, and the mounts vanish with its mount namespace.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Sequence

from ... import _protocol as P
from .._base import ContainerSpec, Mount
from . import _gpu
from ._gpu import DevEntry

# Positional arguments: lower upper work scratch cwd dev python, then (ro|rw) src dst triples, "--",
# command. `dev`: "minimal" makes a /dev of its own with only the harmless nodes (null, zero, full,
# random, urandom, tty, a private pts and shm); else '/'-separated entries of a /dev of its own
# (`_gpu.rootfs_dev_spec`). `python`: the host's interpreter, which enters the root (`ENTER`).
SCRIPT = r"""
set -eu
lower=$1; upper=$2; work=$3; scratch=$4; cwd=$5; dev=$6; python=$7; shift 7
enter=$ENTER; unset ENTER
if [ -z "$upper" ]; then
    mount -t tmpfs -o mode=0755 homeport-ephemeral "$scratch"
    mkdir "$scratch/upper" "$scratch/work"
    upper=$scratch/upper; work=$scratch/work
fi
root=$scratch/root
mkdir -p "$root"
mount -t overlay homeport-root -o "lowerdir=$lower,upperdir=$upper,workdir=$work" "$root"
mkdir -p "$root/dev" "$root/proc" "$root/sys" "$root/tmp"
if [ "$dev" = "minimal" ]; then
    mount -t tmpfs -o mode=0755,nosuid homeport-dev "$root/dev"
    for e in null zero full random urandom tty; do : > "$root/dev/$e"; mount --bind "/dev/$e" "$root/dev/$e"; done
    ln -s /proc/self/fd "$root/dev/fd"; ln -s /proc/self/fd/0 "$root/dev/stdin"
    ln -s /proc/self/fd/1 "$root/dev/stdout"; ln -s /proc/self/fd/2 "$root/dev/stderr"
    mkdir "$root/dev/shm" "$root/dev/pts"
    mount -t tmpfs -o mode=1777,nosuid,nodev homeport-shm "$root/dev/shm"
    if mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 homeport-pts "$root/dev/pts" 2>/dev/null; then
        ln -s pts/ptmx "$root/dev/ptmx"
    fi
else
    mount -t tmpfs -o mode=0755,nosuid homeport-dev "$root/dev"
    IFS=/; for e in $dev; do
        case "$e" in
            *">"*) ln -s "${e#*>}" "$root/dev/${e%%>*}" ;;
            *) if [ -d "/dev/$e" ]; then mkdir -p "$root/dev/$e"; else : > "$root/dev/$e"; fi
               mount --rbind "/dev/$e" "$root/dev/$e" ;;
        esac
    done; unset IFS
fi
mount -t proc proc "$root/proc" 2>/dev/null || mount --rbind /proc "$root/proc"
# The kernel's settings are read-only (as root, /proc/sys/kernel/core_pattern would run a program on the host).
for p in sys sysrq-trigger irq bus fs; do
    if [ -e "$root/proc/$p" ]; then mount --bind "$root/proc/$p" "$root/proc/$p"; mount -o remount,bind,ro "$root/proc/$p"; fi
done
mount -t sysfs -o ro,nosuid,nodev,noexec homeport-sys "$root/sys" 2>/dev/null || mount --rbind /sys "$root/sys" 2>/dev/null || :
for f in /etc/resolv.conf /etc/hosts; do
    if [ -f "$f" ]; then rm -f "$root$f"; cat "$f" > "$root$f"; fi
done
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
    mode=$1; src=$2; dst=$3; shift 3
    if [ -d "$src" ]; then
        mkdir -p "$root$dst"
    else
        mkdir -p "$root${dst%/*}"
        [ -e "$root$dst" ] || : > "$root$dst"
    fi
    mount --rbind "$src" "$root$dst"
    if [ "$mode" = ro ]; then mount -o remount,bind,ro "$root$dst"; fi
done
shift
export TMPDIR=/tmp
exec "$python" -I -S -c "$enter" "$root" "$cwd" "$@"
"""

# Enters the root (argv: root, working directory, command) and runs the command with root's capabilities
# cut to those an image build needs (installing packages: file ownership and modes, switching users),
# the set Docker gives a container less `chroot` and `mknod`. Without CAP_SYS_CHROOT and CAP_SYS_ADMIN
# root can neither leave the chroot nor undo a mount; without CAP_DAC_READ_SEARCH it cannot open files
# by handle; without CAP_SYS_RAWIO, CAP_SYS_MODULE and the rest it cannot reach the kernel. The cut is
# to the bounding set, so no program the command runs gets them back.
ENTER = r"""
import ctypes, os, sys
root, cwd, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
libc = ctypes.CDLL(None, use_errno=True)
os.chroot(root)
try:
    os.makedirs(cwd, exist_ok=True)
    os.chdir(cwd)
except OSError:
    os.chdir("/")
KEEP = {0, 1, 3, 4, 5, 6, 7, 8, 10, 29, 31}  # chown dac_override fowner fsetid kill setgid setuid setpcap
with open("/proc/sys/kernel/cap_last_cap") as f:  # net_bind_service audit_write setfcap
    last = int(f.read())
for cap in range(last + 1):
    if cap not in KEEP and libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
        raise SystemExit(f"homeport: could not drop capability {cap}: {os.strerror(ctypes.get_errno())}")
os.execvp(argv[0], argv)
"""


_PACKAGE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # homeport's own directory
# `homeport.runtime._newroot.BOOT` (the backend imports nothing of the runtime): that module run without
# the package's own imports
_BOOT = ("import sys, types\n"
         "for name, path in (('homeport', sys.argv[1]), ('homeport.runtime', sys.argv[1] + '/runtime')):\n"
         "    m = types.ModuleType(name); m.__path__ = [path]; sys.modules[name] = m\n"
         "from homeport.runtime._newroot import main\n"
         "main(sys.argv[2:])\n")


def command(spec: ContainerSpec) -> list[str]:
    """The argv that runs `spec.argv` inside the root file system `spec.rootfs` describes."""
    assert spec.rootfs is not None
    return wrap(spec.argv, spec.rootfs, spec.mounts, spec.private_network)


def isolated_root(rootfs: str, uid: int | None) -> bool:
    """Whether containers of this root file system get their own user (`uid`) and namespaces
    (`homeport.runtime._newroot`): a container's (not an image build step's, whose writes are the
    layer), with the control plane root."""
    return uid is not None and os.geteuid() == 0 and json.loads(rootfs).get("upper") is None


def own_web_entry(spec: ContainerSpec) -> ContainerSpec:
    """A web container's spec with only its own `<dir>/<container id>` (where its sockets are) of the
    shared web socket directory bound: it can neither replace another container's socket nor reach one."""
    own = os.path.dirname(spec.env.get(P.ENV_WEB_SOCKET) or "")
    shared = os.path.dirname(own)
    if os.path.basename(own) != spec.container_id or not any(m.source.rstrip("/") == shared for m in spec.mounts):
        return spec
    mounts = [m for m in spec.mounts if m.source.rstrip("/") != shared] + [Mount(own, own, read_only=False)]
    return dataclasses.replace(spec, mounts=tuple(mounts))


def wrap(argv: Sequence[str], rootfs: str, mounts: Sequence[Mount], private_network: bool = False,
         dev: Sequence[DevEntry] | None = None, uid: int | None = None, template: bool = False) -> list[str]:
    """`uid`: the container's own host user (or, for a `template`, the one its containers are made
    with), where `isolated_root`."""
    fs = json.loads(rootfs)
    if isolated_root(rootfs, uid):
        net = ["--net"] if private_network else []
        pid = [] if template else ["--pid", "--fork"]  # a template's containers each get their own
        spec = {"lower": fs["lower"], "scratch": fs["scratch"], "cwd": fs.get("cwd") or "/", "uid": uid,
                "first": None if template or uid is None else P.subordinate_ids(uid),
                "template": template, "net": private_network, "dev": "-" if dev is None else _gpu.rootfs_dev_spec(dev),
                "mounts": [[m.source, m.target, not m.read_only] for m in mounts]}
        return ["unshare", "--mount", "--propagation", "private", *net, *pid, "--", sys.executable, "-I", "-S", "-c",
                _BOOT, _PACKAGE, json.dumps(spec), "--", *argv]
    # Its own processes (`/proc/<pid>/root` of a host process would be a way out) and, as root, only
    # the capabilities `ENTER` leaves it.
    unshare = ["unshare", "--mount", "--propagation", "private", "--pid", "--fork",
               *(["--net"] if private_network else [])]
    if os.geteuid() != 0:
        unshare += ["--user", "--map-root-user"]
    args = [":".join(fs["lower"]), fs.get("upper") or "", fs.get("work") or "", fs["scratch"], fs.get("cwd") or "/",
            "minimal" if dev is None else _gpu.rootfs_dev_spec(dev), sys.executable]
    for m in mounts:
        args += ["ro" if m.read_only else "rw", m.source, m.target]
    return [*unshare, "--", "/usr/bin/env", f"ENTER={ENTER}", "/bin/sh", "-c", SCRIPT, "homeport-rootfs", *args,
            "--", *argv]


def working_dir(rootfs: str) -> str:
    """The working directory of containers in this root file system."""
    return json.loads(rootfs).get("cwd") or "/"
