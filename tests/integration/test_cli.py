"""The CLI as a user runs it: `homeport run`, `homeport server ...`, `homeport container ...`."""

import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import msgpack
import psutil
import pytest

from homeport import _protocol as P
from homeport.testing import Platform, homeport_cli, wait_for

pytestmark = pytest.mark.integration

PROGRAMS = Path(__file__).parent / "programs"


def test_help_lists_every_command():
    out = homeport_cli("--help")
    assert out.returncode == 0
    for command in ("run", "deploy", "serve", "server", "container"):
        assert f"  {command}" in out.stdout


def test_run_entrypoint_with_arguments_streams_tagged_logs(platform):
    out = homeport_cli("run", str(PROGRAMS / "cli_app.py"), "--word", "hey", "--times", "3", "--loud")
    assert out.returncode == 0, out.stderr
    assert "result=HEY HEY HEY loud=True remote_module=homeport" in out.stdout
    # container output: tagged with the function and container, stdout on stdout, stderr on stderr
    assert any(line.startswith("[shout ") and line.endswith("] out: hey") for line in out.stdout.splitlines())
    assert any(line.startswith("[shout ") and line.endswith("] err: hey") for line in out.stderr.splitlines())
    assert "err: hey" not in out.stdout


def test_run_one_function_and_write_its_result(platform, tmp_path):
    result = tmp_path / "result.txt"
    out = homeport_cli("run", f"{PROGRAMS / 'cli_app.py'}::shout", "--word", "yo", "-w", str(result), "-q")
    assert out.returncode == 0, out.stderr
    assert result.read_text() == "YO "
    assert "out: yo" not in out.stdout  # -q: container output is not streamed


def test_run_reports_a_missing_required_argument(platform):
    out = homeport_cli("run", f"{PROGRAMS / 'cli_app.py'}::shout")
    assert out.returncode != 0
    assert "--word" in out.stderr


def test_run_unknown_function_names_the_choices(platform):
    out = homeport_cli("run", f"{PROGRAMS / 'cli_app.py'}::nope")
    assert out.returncode != 0
    assert "main" in out.stderr and "shout" in out.stderr


def test_async_local_entrypoint(platform):
    out = homeport_cli("run", str(PROGRAMS / "async_app.py"), "--x", "21")
    assert out.returncode == 0, out.stderr
    assert "doubled 42" in out.stdout


def test_legacy_stub_runs_with_a_deprecation_warning(platform):
    out = homeport_cli("run", f"{PROGRAMS / 'stub_app.py'}::hello", "--name", "stub", "-w", "/dev/stdout")
    assert out.returncode == 0, out.stderr
    assert "hello stub" in out.stdout
    assert "App" in out.stderr  # the warning says to use modal.App


def test_plain_python_script_with_app_run(platform):
    out = subprocess.run([sys.executable, str(PROGRAMS / "script_app.py")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "cubes [0, 1, 8, 27]" in out.stdout


def test_container_list_and_stop(platform, apps_path):
    import basic

    with basic.app.run(show_logs=False):
        pid = basic.pid.remote()
        out = homeport_cli("container", "list", "--json")
        assert out.returncode == 0, out.stderr
        import json

        rows = [r for r in json.loads(out.stdout) if r["pid"] == pid]
        assert rows and rows[0]["function"] == "pid"
        assert rows[0]["app_name"] == "basic"
        table = homeport_cli("container", "list").stdout
        line = next(x for x in table.splitlines() if rows[0]["container_id"] in x)
        assert "basic" in line and rows[0]["app_id"] not in line  # the app's name, not its id
        out = homeport_cli("container", "stop", rows[0]["container_id"])
        assert out.returncode == 0, out.stderr
        assert wait_for(lambda: not _alive(pid), timeout=20)
        assert basic.pid.remote() != pid  # the next call gets a fresh container


def test_server_start_status_stop_and_state_survives_restart(tmp_path):
    state = tmp_path / "s"
    env = {**os.environ, P.ENV_STATE_DIR: str(state)}
    env.pop(P.ENV_SERVER_ADDRESS, None)
    out = homeport_cli("server", "start", env=env)
    assert out.returncode == 0, out.stderr
    pid = int((state / "server.pid").read_text())
    try:
        out = homeport_cli("server", "status", env=env)
        assert out.returncode == 0 and f"pid {pid}" in out.stdout
        assert (state / "token").stat().st_mode & 0o077 == 0  # the token is readable by the user only
        assert (state / "state.db").exists()
    finally:
        out = homeport_cli("server", "stop", env=env)
    assert out.returncode == 0, out.stderr
    assert wait_for(lambda: not _alive(pid), timeout=20)
    out = homeport_cli("server", "status", env=env)
    assert out.returncode != 0 and "not running" in (out.stdout + out.stderr).lower()


def test_spawned_result_survives_a_control_plane_restart(tmp_path, apps_path):
    with Platform(str(tmp_path / "p")) as p:
        import basic

        with basic.app.run(show_logs=False):
            call = basic.square.spawn(9)
            assert call.get(timeout=30) == 81
        p.restart()
        from homeport import FunctionCall

        assert FunctionCall.from_id(call.object_id).get(timeout=30) == 81


def test_wrong_token_is_refused(platform):
    sock_path = str(platform.state_dir / "server.sock")
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(sock_path)
        body = msgpack.packb({"t": P.HELLO, "id": 1, "role": "client", "token": "not-the-token", "v": P.PROTOCOL_VERSION})
        s.sendall(struct.pack(">I", len(body)) + body)
        (n,) = struct.unpack(">I", _recv(s, 4))
        reply = msgpack.unpackb(_recv(s, n))
        assert reply["ok"] is False and reply["code"] == "auth"
        assert s.recv(1) == b""  # and the connection is closed


def test_wrong_container_token_is_refused(platform):
    sock_path = str(platform.state_dir / "server.sock")
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(sock_path)
        body = msgpack.packb({"t": P.HELLO, "id": 1, "role": "container", "cid": "ta-nope", "token": "x"})
        s.sendall(struct.pack(">I", len(body)) + body)
        (n,) = struct.unpack(">I", _recv(s, 4))
        reply = msgpack.unpackb(_recv(s, n))
        assert reply["ok"] is False and reply["code"] == "auth"


def _recv(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
