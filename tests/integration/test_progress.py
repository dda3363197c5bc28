"""Progress for long work: drawn on a terminal (image build steps, big maps), never into pipes."""

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
import uuid
from pathlib import Path

import pytest

from homeport.testing import homeport_cli

pytestmark = pytest.mark.integration

PROGRAM = Path(__file__).parent / "programs" / "progress_app.py"


def _run_on_a_terminal(*args: str, env: dict, timeout: float = 120) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as its stdin, stdout and stderr; (exit code, all it wrote)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "homeport.cli", *args], stdin=slave, stdout=slave,
                            stderr=slave, env=env, close_fds=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1)
            if ready:
                try:
                    chunk = os.read(master, 1 << 16)
                except OSError:  # the terminal's last writer closed it
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    return proc.returncode, out.decode("utf-8", "replace")


def _env() -> dict:
    env = {**os.environ, "TERM": "xterm-256color", "HP_PROGRESS_NONCE": uuid.uuid4().hex}
    env.pop("HOMEPORT_PROGRESS", None)
    return env


def test_a_terminal_gets_a_build_spinner_and_a_map_bar(platform):
    code, out = _run_on_a_terminal("run", str(PROGRAM), "--n", "300", env=_env())
    assert code == 0, out
    assert "total 8955050" in out
    assert "Building image: step 2/2, env(HP_PROGRESS_NONCE)" in out  # the spinner names the step
    assert "square.map()" in out and "300/300" in out  # the bar ends with every output received


def test_pipes_get_plain_lines_only(platform):
    out = homeport_cli("run", str(PROGRAM), "--n", "300", env=_env())
    assert out.returncode == 0, out.stderr
    assert "total 8955050" in out.stdout
    assert "[image] => Step 2/2: env(HP_PROGRESS_NONCE)" in out.stdout  # the build log, as plain lines
    assert "Building image:" not in out.stdout + out.stderr
    assert "square.map()" not in out.stdout + out.stderr
    assert "\x1b[" not in out.stderr  # no terminal control codes


def test_quiet_draws_nothing_on_a_terminal(platform):
    code, out = _run_on_a_terminal("run", "-q", str(PROGRAM), "--n", "300", env=_env())
    assert code == 0, out
    assert "total 8955050" in out
    assert "Building image" not in out and "square.map()" not in out
