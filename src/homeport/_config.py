"""Where this installation keeps its state, and how clients find and authenticate to the control plane.

Shared by the SDK, the CLI and the server; no imports of ours beyond the protocol.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from . import _protocol as P


def state_dir() -> Path:
    """`$HOMEPORT_STATE_DIR`, else `$XDG_STATE_HOME/homeport`, else `~/.local/state/homeport`."""
    env = os.environ.get(P.ENV_STATE_DIR)
    if env:
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "state"
    return (base / "homeport").resolve()


def server_address() -> Path:
    """The control plane's Unix socket (where admin clients connect)."""
    env = os.environ.get(P.ENV_SERVER_ADDRESS)
    if env and not env.startswith("tcp://"):
        return Path(env)
    return state_dir() / "server.sock"


# POSIX keeps the environment as bytes in `os.environ._data`: four lookups there cost a fraction of
# `os.environ.get`'s (which encodes and decodes), and `client_address` runs on every call.
_environ = os.environ
_raw_env: dict | None = getattr(os.environ, "_data", None) if os.name == "posix" else None
_K1, _K2, _K3, _K4 = (P.ENV_SERVER_ADDRESS, P.ENV_STATE_DIR, "XDG_STATE_HOME", "HOME")  # what names the address
_R1, _R2, _R3, _R4 = (os.fsencode(k) for k in (_K1, _K2, _K3, _K4))
# (the environment that names the control plane, its address): resolving the state directory's path
# (system calls, ~50 µs) is too slow to run on every call.
_cached_address: tuple[tuple, str] = ((), "")


def client_address() -> str:
    """Where this process connects: `$HOMEPORT_SERVER_ADDRESS` as given (a socket path, or
    `tcp://HOST:PORT` in a container on another machine), else the Unix socket. Worked out again only
    when the environment that names it changes."""
    global _cached_address
    raw = _raw_env
    if raw is not None and os.environ is _environ:
        key: tuple = (raw.get(_R1), raw.get(_R2), raw.get(_R3), raw.get(_R4))
    else:
        env = os.environ
        key = (env.get(_K1), env.get(_K2), env.get(_K3), env.get(_K4))
    cached = _cached_address
    if cached[0] != key:
        cached = _cached_address = (key, os.environ.get(P.ENV_SERVER_ADDRESS) or str(server_address()))
    return cached[1]


def log_path() -> Path:
    return state_dir() / "server.log"


def pid_path() -> Path:
    return state_dir() / "server.pid"


def token_path() -> Path:
    return state_dir() / "token"


def ensure_state_dir() -> Path:
    """The state directory, made if needed, and readable by its owner only: it holds the token, the
    secrets' key and the database (a directory that existed with wider permissions is tightened)."""
    d = state_dir()
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = d.stat()
    if st.st_mode & 0o077 and st.st_uid == os.getuid():
        os.chmod(d, 0o700)
    return d


def load_or_create_token() -> str:
    """The per-installation token; created once with user-only permissions."""
    path = token_path()
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    ensure_state_dir()
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    return token


def read_token() -> str | None:
    try:
        return token_path().read_text().strip()
    except FileNotFoundError:
        return None
