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
is not root; HOMEPORT_ISOLATION=0) it runs as `unshare --mount` (plus `--user --map-root-user` when not
root), a fixed shell script that mounts the overlay, /dev, /proc and `spec.mounts` (host paths bound at
their targets), and `exec chroot`. Every step execs, so the pid the backend watches and signals is the
container's own process (or `unshare --fork`'s, which waits for it), and the mounts vanish with its
mount namespace.
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

# Positional arguments: lower upper work scratch cwd dev, then (ro|rw) src dst triples, "--", command.
# `dev`: "-" binds the host's /dev; else '/'-separated entries of a /dev of its own (`_gpu.rootfs_dev_spec`).
SCRIPT = r"""
set -eu
lower=$1; upper=$2; work=$3; scratch=$4; cwd=$5; dev=$6; shift 6
if [ -z "$upper" ]; then
    mount -t tmpfs -o mode=0755 homeport-ephemeral "$scratch"
    mkdir "$scratch/upper" "$scratch/work"
    upper=$scratch/upper; work=$scratch/work
fi
root=$scratch/root
mkdir -p "$root"
mount -t overlay homeport-root -o "lowerdir=$lower,upperdir=$upper,workdir=$work" "$root"
mkdir -p "$root/dev" "$root/proc" "$root/sys" "$root/tmp"
if [ "$dev" = "-" ]; then
    mount --rbind /dev "$root/dev"
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
mount --rbind /sys "$root/sys" 2>/dev/null || :
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
exec chroot "$root" /bin/sh -c 'mkdir -p "$1" 2>/dev/null; cd "$1" 2>/dev/null || cd /; shift; exec "$@"' homeport-chroot "$cwd" "$@"
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
    unshare = ["unshare", "--mount", "--propagation", "private", *(["--net"] if private_network else [])]
    if os.geteuid() != 0:
        unshare += ["--user", "--map-root-user"]
    args = [":".join(fs["lower"]), fs.get("upper") or "", fs.get("work") or "", fs["scratch"], fs.get("cwd") or "/",
            "-" if dev is None else _gpu.rootfs_dev_spec(dev)]
    for m in mounts:
        args += ["ro" if m.read_only else "rw", m.source, m.target]
    return [*unshare, "--", "/bin/sh", "-c", SCRIPT, "homeport-rootfs", *args, "--", *argv]


def working_dir(rootfs: str) -> str:
    """The working directory of containers in this root file system."""
    return json.loads(rootfs).get("cwd") or "/"
