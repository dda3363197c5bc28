"""User code that tries to leave its container: the host's users, processes and files, and processes
that outlive it or multiply without bound. Each function reports what it managed, as data; the
tests (`test_escape.py`) say what must have failed.
"""

import os
import subprocess
import sys
import time

import modal

app = modal.App("escape-host")
volume = modal.Volume.from_name("escape-vol", create_if_missing=True)


def _try_write(path: str) -> str:
    try:
        with open(path, "w") as f:
            f.write("escaped")
        return "written"
    except OSError as exc:
        return type(exc).__name__


def _try_read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.read(64)
        return "read"
    except OSError as exc:
        return type(exc).__name__


def _signal(pid: int) -> str:
    try:
        os.kill(pid, 0)
        return "reached"
    except OSError as exc:
        return type(exc).__name__


def _processes() -> tuple[list[int], list[str]]:
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    cmdlines = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdlines.append(f.read().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            pass
    return pids, cmdlines


def _look(targets: dict) -> dict:
    with open("/proc/self/uid_map") as f:
        uid_map = f.read().split()
    pids, cmdlines = _processes()
    home = os.path.expanduser("~")
    mine = f"/tmp/hp-mine-{os.environ['HOMEPORT_CONTAINER_ID']}"
    return {
        "cid": os.environ["HOMEPORT_CONTAINER_ID"],
        "uid_map": uid_map,
        "uid": os.getuid(),
        "pids": pids,
        "cmdlines": cmdlines,
        "writes": {p: _try_write(p) for p in targets["write"]},
        "reads": {p: _try_read(p) for p in targets["read"]},
        "environ": {pid: _try_read(f"/proc/{pid}/environ") for pid in targets["pids"]},
        "signal": {pid: _signal(pid) for pid in targets["pids"]},
        "tmp": _try_write(os.path.join(os.environ.get("TMPDIR", "/tmp"), "mine")),
        "slash_tmp_name": mine,
        "slash_tmp": _try_write(mine),
        "slash_tmp_listing": sorted(os.listdir("/tmp")),
        "home": home,
        "home_write": _try_write(os.path.join(home, os.path.basename(mine))),
    }


@app.function()
def look(targets: dict) -> dict:
    """`targets`: host paths and pids, from the test: {"write": [...], "read": [...], "pids": [...]}."""
    return _look(targets)


@app.cls(enable_memory_snapshot=True)
class Snapshotted:
    """The same, from a container forked from a memory snapshot, whose snap hook ran user code first."""

    @modal.enter(snap=True)
    def load(self):
        self.snap_pids, self.snap_cmdlines = _processes()
        self.snap_etc = _try_write("/etc/hp-escaped-snap")

    @modal.method()
    def look(self, targets: dict) -> dict:
        return {**_look(targets), "snap_pids": self.snap_pids, "snap_cmdlines": self.snap_cmdlines,
                "snap_etc": self.snap_etc, "host_pid": int(os.environ.get("HOMEPORT_HOST_PID") or 0)}


@app.function(volumes={"/vol": volume})
def on_volume(name: str) -> dict:
    """A container still writes its own volume (as the unprivileged user it now is on the host)."""
    with open(f"/vol/{name}", "w") as f:
        f.write(name)
    volume.commit()
    with open("/proc/self/uid_map") as f:
        uid_map = f.read().split()
    return {"read": open(f"/vol/{name}").read(), "uid_map": uid_map, "etc": _try_write("/etc/hp-escaped"),
            "pids": len([p for p in os.listdir("/proc") if p.isdigit()])}


@app.function()
def daemon(marker: str) -> int:
    """Start a double-forked `setsid` daemon that would outlive the container; its pid as seen inside."""
    code = (
        "import os, sys, time\n"
        "if os.fork(): os._exit(0)\n"
        "os.setsid()\n"
        "if os.fork(): os._exit(0)\n"
        "open(sys.argv[1], 'w').write(os.environ.get('HOMEPORT_HOST_PID', '') + ' ' + str(os.getpid()))\n"
        "time.sleep(3600)\n"
    )
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), marker)
    subprocess.run([sys.executable, "-c", code, path], check=True)
    for _ in range(200):
        if os.path.exists(path) and open(path).read().strip():
            break
        time.sleep(0.05)
    inner = int(open(path).read().split()[-1])  # its pid in the container's namespace (the test finds it
    # on the host by the marker in its command line)
    return inner


@app.function()
def fork_bomb(n: int) -> dict:
    """Start `n` sleeping processes at once; how many started and what stopped the rest."""
    children = []
    error = None
    for _ in range(n):
        try:
            pid = os.fork()
        except OSError as exc:
            error = f"{type(exc).__name__}: {exc}"
            break
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.kill(pid, 9)
    for pid in children:
        os.waitpid(pid, 0)
    return {"started": len(children), "error": error}


@app.function()
def whoami(delay: float) -> dict:
    """Its user as the host sees it (the second field of its uid_map), held for `delay` seconds so
    that two calls at once run in two containers."""
    time.sleep(delay)
    with open("/proc/self/uid_map") as f:
        return {"cid": os.environ["HOMEPORT_CONTAINER_ID"], "uid_map": f.read().split(), "namespaces": _namespace_fds()}


def _namespace_fds() -> list[str]:
    """The namespaces this process holds open descriptors of (a handle on one is a way into it)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if ":[" in target and not target.startswith(("socket:", "pipe:", "anon_inode:")):
            found.append(target)
    return found


@app.cls()
class Reader:
    """Reads files by name in whatever container of its (a variant's included) runs it."""

    @modal.method()
    def read(self, paths: list) -> dict:
        return {"runtime_path": os.environ.get("HOMEPORT_RUNTIME_PATH"), "reads": {p: _try_read(p) for p in paths},
                "platform_env": {k: os.environ.get(k) for k in PLATFORM_NAMES}}


# What only the platform sets in a container (a socket directory the backend lets it write, its identity,
# how it isolates itself), named by the attack below as a user would.
PLATFORM_NAMES = ("HOMEPORT_WEB_SOCKET", "HOMEPORT_ISOLATE", "HOMEPORT_PRIVATE_NETWORK", "HOMEPORT_CONTAINER_ID")


@app.function()
def runtime_path_attack(state_dir: str) -> dict:
    """Names the control plane's state directory as the runtime's packages (whose entries every
    container keeps in view), in a class variant's secret and in a sandbox's environment, then reads
    its token and secret key from there."""
    paths = [os.path.join(state_dir, "token"), os.path.join(state_dir, "secret.key")]
    named = {"HOMEPORT_RUNTIME_PATH": state_dir, **{k: os.path.join(state_dir, "web", "x") for k in PLATFORM_NAMES}}
    variant = Reader.with_options(secrets=[modal.Secret.from_dict(named)])
    out = {"variant": variant().read.remote(paths)}
    sb = modal.Sandbox.create("python3", "-c", "import os, sys\nfor p in sys.argv[1:]:\n    try:\n"
                              "        open(p, 'rb').read(8); print(p, 'read')\n    except OSError as e:\n"
                              "        print(p, type(e).__name__)\nprint('env', os.environ.get('HOMEPORT_RUNTIME_PATH'))",
                              *paths, env={"HOMEPORT_RUNTIME_PATH": state_dir})
    sb.wait()
    out["sandbox"] = sb.stdout.read()
    return out
