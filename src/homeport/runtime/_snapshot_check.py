"""What a memory snapshot may not carry into its containers (`snapshot_problems`: threads, open
network sockets, CUDA state), and the user's source files it was taken from (`user_sources`), so that
the backend can tell when it has gone stale. Split out of `_template`, which forks from the snapshot.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from .. import _protocol as P
from .._protocol.definition import FunctionDefinition
from ._cuda import cuda_problem


def _inet_sockets() -> list[str]:
    """This process's open TCP/UDP sockets as "ip:port[->ip:port]", read from /proc: the runtime
    runs in the image's environment, where psutil is not installed unless the image asks for it."""
    try:
        inodes = set()
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        if not inodes:
            return []
        found = []
        for table in ("tcp", "tcp6", "udp", "udp6"):
            try:
                lines = open(f"/proc/self/net/{table}").read().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if len(fields) > 9 and fields[9] in inodes:
                    local, remote = _proc_addr(fields[1]), _proc_addr(fields[2])
                    found.append(local if remote.endswith(":0") else f"{local}->{remote}")
        return found
    except OSError:  # not Linux: ask psutil if the image has it
        try:
            import psutil

            return [f"{c.laddr.ip}:{c.laddr.port}" for c in psutil.Process().net_connections(kind="inet")]
        except Exception:
            return []


def _proc_addr(text: str) -> str:
    import ipaddress

    host, port = text.split(":")
    raw = bytes.fromhex(host)
    # /proc prints each 32-bit word of the address in host (little-endian) order.
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return f"{ipaddress.ip_address(raw)}:{int(port, 16)}"


def snapshot_problems() -> list[str]:
    """State that a fork cannot carry into a container; a snapshot with any of it is refused."""
    problems = []
    threads = [t.name for t in threading.enumerate() if t is not threading.main_thread() and t.is_alive()]
    if threads:
        problems.append(f"threads started before the snapshot would not exist in containers: {', '.join(threads)}")
    conns = _inet_sockets()
    if conns:
        where = ", ".join(conns)
        problems.append(
            f"network sockets open before the snapshot ({where}) would be shared by every container; open "
            "connections in an `@modal.enter()` hook without `snap=True`"
        )
    cuda = cuda_problem()
    if cuda:
        problems.append(cuda)
    torch = sys.modules.get("torch")
    if torch is not None and not cuda:
        try:
            if torch.cuda.is_initialized():
                problems.append(
                    "CUDA was initialised before the snapshot, and CUDA state cannot be forked; move GPU work "
                    "to an `@modal.enter()` hook without `snap=True`"
                )
        except Exception:
            pass
    return problems


def user_sources(defn: FunctionDefinition) -> list[list[Any]]:
    """[path, mtime_ns, size, inode] of every module this process imported from the user's own code
    directories (not from the image's environment nor the runtime): a snapshot taken with them is stale
    once one changes."""
    dirs = [os.path.realpath(d) for d in defn.sys_path if d]
    if defn.module_file:
        dirs.append(os.path.dirname(os.path.realpath(defn.module_file)))
    runtime = [os.path.realpath(os.path.join(p, e)) for p in os.environ.get(P.ENV_RUNTIME_PATH, "").split(os.pathsep)
               if p and os.path.isdir(p) for e in os.listdir(p)]
    installed = [os.path.realpath(p) for p in {sys.prefix, sys.base_prefix, sys.exec_prefix}] + runtime

    def under(path: str, roots: list[str]) -> bool:
        return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)

    out = []
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not isinstance(path, str):
            continue
        real = os.path.realpath(path)
        if not under(real, dirs) or under(real, installed) or "site-packages" in real.split("/"):
            continue
        try:
            st = os.stat(real)
        except OSError:
            continue
        out.append([real, st.st_mtime_ns, st.st_size, st.st_ino])
    return out
