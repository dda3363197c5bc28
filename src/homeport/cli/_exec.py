"""`homeport container exec ID CMD...` (and `homeport shell ta-...`): run a command inside a running
container of the local backend, as its own processes run: in its namespaces (those it has of its own),
its working directory, its environment, its user, and its cgroup (so its limits hold).

The command never gets more than the container has: it runs as the container's user, with the
container's credentials dropped from its environment.
"""

from __future__ import annotations

import os
import subprocess
import sys

import rich_click as click

from .. import _protocol as P

_NAMESPACES = (("user", "--user"), ("mnt", "--mount"), ("pid", "--pid"), ("net", "--net"), ("ipc", "--ipc"),
               ("uts", "--uts"))


def _runtime_process(pid: int) -> int:
    """The container's runtime process: `pid` itself (a copy forked from a template), or the deepest
    `homeport.runtime` process under it (a sandbox, and the shell that put it in its cgroup, come first)."""
    import psutil

    try:
        root = psutil.Process(pid)
        chain = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        raise click.ClickException("The container exited.") from None
    found = pid
    for proc in chain:
        try:
            if "homeport.runtime" in " ".join(proc.cmdline()):
                found = proc.pid
        except psutil.Error:
            continue
    return found


def _ids(pid: int) -> tuple[int, int]:
    uid = gid = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                uid = int(line.split()[1])
            elif line.startswith("Gid:"):
                gid = int(line.split()[1])
    return uid, gid


def _environ(pid: int) -> list[str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        items = [e.decode(errors="replace") for e in f.read().split(b"\0") if e]
    return [e for e in items if not e.startswith(P.ENV_CONTAINER_TOKEN + "=")]


def _cgroup_procs(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return os.path.join("/sys/fs/cgroup", line.strip()[3:].lstrip("/"), "cgroup.procs")
    except OSError:
        pass
    return None


def command_for(pid: int, command: list[str], env: dict[str, str] | None = None) -> list[str]:
    """The `nsenter` command line that runs `command` inside the container whose runtime is `pid`."""
    argv = ["nsenter", "--target", str(pid)]
    entered_user = False
    for ns, flag in _NAMESPACES:
        try:
            if os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"):
                argv.append(flag)
                entered_user = entered_user or ns == "user"
        except OSError:
            continue
    if entered_user:
        argv.append("--preserve-credentials")
    uid, gid = _ids(pid)
    if not entered_user:  # the container's own user on the host: never the operator's
        argv += ["--setuid", str(uid), "--setgid", str(gid)]
    argv.append("--wd")
    # The environment the control plane gave it (a copy forked from a template has its own, which
    # /proc does not show), else the one it started with.
    environ = [f"{k}={v}" for k, v in env.items()] if env is not None else _environ(pid)
    return [*argv, "env", "-i", *environ, *command]


def exec_in_container(container_id: str, command: list[str], pty: bool | None, request) -> int:
    if not command:
        raise click.UsageError("Give the command to run: homeport container exec ID CMD...")
    row = request(P.ContainerExecInfo(container_id=container_id))
    if row.get("pid") is None or row["state"] == "stopping":
        raise click.ClickException(f"Container {container_id} is {row['state']}: it cannot run a command.")
    pid = _runtime_process(row["pid"])
    argv = command_for(pid, command, row.get("env"))
    procs = _cgroup_procs(pid)
    if pty and not sys.stdin.isatty():
        click.echo("homeport: --pty needs a terminal; running without one.", err=True)

    def join_cgroup() -> None:  # in the child, before it runs the command: the container's limits hold
        if procs:
            try:
                with open(procs, "w") as f:
                    f.write(str(os.getpid()))
            except OSError:
                pass

    try:
        return subprocess.call(argv, preexec_fn=join_cgroup)
    except FileNotFoundError:
        raise click.ClickException("`nsenter` (util-linux) is needed to run a command in a container.") from None
