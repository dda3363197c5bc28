"""Find the control plane, or start the embedded default in the background (the SDK never imports it)."""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import time

from . import _config
from . import _protocol as P
from .exception import ConnectionError

START_TIMEOUT_SECONDS = 20.0


def is_listening() -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(_config.server_address()))
    except OSError:
        return False
    finally:
        s.close()
    return True


def start_server(quiet: bool = False) -> int | None:
    """Start `python -m homeport.server` detached, unless one is listening. Returns the new pid."""
    state = _config.ensure_state_dir()
    with open(state / "server.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two programs starting at once get one server
        if is_listening():
            return None
        _config.load_or_create_token()
        # posix_spawn rather than Popen: the server outlives this process, and a Popen object
        # would warn when collected while its child still runs.
        pid = os.posix_spawn(
            sys.executable,
            [sys.executable, "-m", "homeport.server"],
            dict(os.environ),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, str(_config.log_path()), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600),
                (os.POSIX_SPAWN_DUP2, 1, 2),
            ],
            setsid=True,
        )
        # Joining a Ray cluster takes seconds more than opening a socket.
        ray = os.environ.get(P.ENV_BACKEND) == "ray"
        deadline = time.monotonic() + START_TIMEOUT_SECONDS * (4 if ray else 1)
        exit_status = None
        while time.monotonic() < deadline:
            if is_listening():
                if not quiet:
                    print(
                        f"Started the Homeport control plane (pid {pid}) on {_config.server_address()}; "
                        f"its log is {_config.log_path()}",
                        file=sys.stderr,
                    )
                return pid
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                exit_status = os.waitstatus_to_exitcode(status)
                break
            time.sleep(0.01)
        raise ConnectionError(
            f"The Homeport control plane did not start (exit code {exit_status}). "
            f"See its log: {_config.log_path()}"
        )


def ensure_server() -> None:
    if os.environ.get(P.ENV_IS_REMOTE) == "1":
        return
    if not is_listening():
        if os.environ.get(_config.P.ENV_SERVER_ADDRESS):
            raise ConnectionError(
                f"No Homeport control plane listens on {_config.server_address()} "
                f"(set by {_config.P.ENV_SERVER_ADDRESS}). Start it with `homeport server start`."
            )
        start_server()
