"""The CLI as a user runs it: `homeport run`, `homeport server ...`, `homeport container ...`."""

import os
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import psutil
import pytest

from homeport import _protocol as P
from homeport.testing import Platform, homeport_cli, wait_for

pytestmark = pytest.mark.integration

PROGRAMS = Path(__file__).parent / "programs"
EXAMPLES = Path(__file__).parents[2] / "examples"


COMMANDS = {
    "app": ("list", "stop", "history", "logs", "rollback"),
    "secret": ("create", "list", "delete"),
    "volume": ("create", "list", "ls", "put", "get", "rm", "cp", "rename", "delete"),
    "container": ("list", "stop", "logs", "exec"),
    "server": ("start", "stop", "status"),
    "run": (),
    "deploy": (),
    "serve": (),
    "shell": (),
}


def _listed(help_text: str) -> set[str]:
    """The command names in a help screen's command table (one per row, then its description)."""
    return set(re.findall(r"^\W*([a-z]+) {2,}\S", help_text, re.M))


def test_help_lists_every_command():
    out = homeport_cli("--help")
    assert out.returncode == 0, out.stderr
    assert _listed(out.stdout) >= set(COMMANDS), out.stdout
    for group, subcommands in COMMANDS.items():
        if subcommands:
            out = homeport_cli(group, "--help")
            assert out.returncode == 0, out.stderr
            assert _listed(out.stdout) >= set(subcommands), out.stdout


def test_run_entrypoint_with_arguments_streams_tagged_logs(platform):
    out = homeport_cli("run", str(PROGRAMS / "cli_app.py"), "--word", "hey", "--times", "3", "--loud")
    assert out.returncode == 0, out.stderr
    assert "result=HEY HEY HEY loud=True remote_module=homeport" in out.stdout
    # container output: tagged with the function and container, stdout on stdout, stderr on stderr
    assert any(line.startswith("[shout ") and line.endswith("] out: hey") for line in out.stdout.splitlines())
    assert any(line.startswith("[shout ") and line.endswith("] err: hey") for line in out.stderr.splitlines())
    assert "err: hey" not in out.stdout


def test_container_output_streams_while_the_function_runs(platform, tmp_path):
    # The function prints, then waits for a file that this test creates only once it has read that
    # line from `homeport run`'s stdout: the line must arrive while the function still runs.
    gate = tmp_path / "gate"
    proc = subprocess.Popen([sys.executable, "-m", "homeport.cli", "run", str(PROGRAMS / "live_logs.py"),
                             "--gate", str(gate)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 1)
            if not ready:
                continue
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "] waiting for the gate" in line:
                break
        assert any(line.startswith("[talk_then_wait ") for line in lines), lines
        gate.touch()
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "result through" in rest


def test_the_readme_example_runs(platform):
    out = homeport_cli("run", str(EXAMPLES / "hello.py"), "--n", "20")
    assert out.returncode == 0, out.stderr
    tagged = re.compile(r"\[square [0-9a-f]{8}\] squaring (\d+) in a container\n")
    assert sorted(int(x) for x in tagged.findall(out.stdout)) == sorted([7, *range(20)])  # container output, tagged
    # A container's line can land in the middle of one of the entrypoint's: what is left once they
    # are taken out is the entrypoint's own output.
    assert tagged.sub("", out.stdout).splitlines() == ["square(7) = 49", "sum of squares below 20 = 2470"]


def test_first_call_starts_the_control_plane_and_says_where():
    # A fresh state directory and no control plane: the SDK starts one and says where it listens
    # and where its log is.
    state = Path(tempfile.mkdtemp(prefix="hp-auto-", dir="/tmp"))
    env = {**os.environ, P.ENV_STATE_DIR: str(state)}
    env.pop(P.ENV_SERVER_ADDRESS, None)
    try:
        out = subprocess.run([sys.executable, str(PROGRAMS / "script_app.py")], capture_output=True, text=True,
                             timeout=120, env=env)
        assert out.returncode == 0, out.stderr
        assert "cubes [0, 1, 8, 27]" in out.stdout
        pid = int((state / "server.pid").read_text())
        assert (f"Started the Homeport control plane (pid {pid}) on {state / 'server.sock'}; "
                f"its log is {state / 'server.log'}") in out.stderr
        assert (state / "server.log").stat().st_size > 0
        assert _alive(pid)  # it outlives the program that started it
    finally:
        Platform(str(state)).stop()  # the control plane named by the pid file, and its containers
        shutil.rmtree(state, ignore_errors=True)


def test_run_one_function_and_write_its_result(platform, tmp_path):
    result = tmp_path / "result.txt"
    out = homeport_cli("run", "-w", str(result), "-q", f"{PROGRAMS / 'cli_app.py'}::shout", "--word", "yo")
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


def test_options_after_func_ref_belong_to_the_function(platform):
    # `--detach` and `--quiet` are homeport's options too; after FUNC_REF they are the entrypoint's.
    out = homeport_cli("run", str(PROGRAMS / "cli_types.py"), "--detach", "--quiet", "--w", "given")
    assert out.returncode == 0, out.stderr
    assert "detach=True quiet=True w=given" in out.stdout
    assert "App completed" in out.stderr  # not detached, not quiet: homeport's own status lines show


def test_help_after_func_ref_shows_the_functions_parameters():
    out = homeport_cli("run", f"{PROGRAMS / 'cli_types.py'}::greet", "--help")
    assert out.returncode == 0, out.stderr
    assert "--name" in out.stdout and "--times" in out.stdout
    assert "--detach" not in out.stdout and "--write-result" not in out.stdout


def test_run_parses_datetime_arguments(platform, tmp_path):
    result = tmp_path / "when.txt"
    out = homeport_cli("run", "-q", "-w", str(result), f"{PROGRAMS / 'cli_types.py'}::when",
                       "--d", "2024-01-02T03:04:05", "--later", "2024-02-03", "--mode", "b")
    assert out.returncode == 0, out.stderr
    assert result.read_text() == "datetime 2024-01-02T03:04:05 2024-02-03T00:00:00 b"


def test_run_refuses_an_annotation_it_cannot_parse():
    out = homeport_cli("run", f"{PROGRAMS / 'cli_types.py'}::listy", "--xs", "1")
    assert out.returncode != 0
    assert "NoParserAvailable" in out.stderr
    assert "Parameter `xs` of 'listy' is annotated `list[int]`" in out.stderr


def test_async_local_entrypoint(platform):
    out = homeport_cli("run", str(PROGRAMS / "async_app.py"), "--x", "21")
    assert out.returncode == 0, out.stderr
    assert "doubled 42" in out.stdout


def test_legacy_stub_runs_with_a_deprecation_warning(platform):
    out = homeport_cli("run", "-w", "/dev/stdout", f"{PROGRAMS / 'stub_app.py'}::hello", "--name", "stub")
    assert out.returncode == 0, out.stderr
    assert "hello stub" in out.stdout
    assert "App" in out.stderr  # the warning says to use modal.App


def test_plain_python_script_with_app_run(platform):
    out = subprocess.run([sys.executable, str(PROGRAMS / "script_app.py")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "cubes [0, 1, 8, 27]" in out.stdout


def test_plain_script_gets_its_own_exception_and_result_classes_back(platform):
    # The container imports the script under another name than `__main__`; the caller must still
    # catch its own exception class and get instances of its own classes.
    out = subprocess.run([sys.executable, str(PROGRAMS / "script_types.py")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "returned Point True 3 6" in out.stdout
    assert "caught BadInput negative: -1 True" in out.stdout
    assert "mapped True True" in out.stdout


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


def test_a_malformed_hello_is_refused_and_the_connection_closed(platform):
    """The hello is read as its type before authentication: a field of the wrong type is no KeyError or
    TypeError inside the control plane, but a "malformed hello" answer."""
    sock_path = str(platform.state_dir / "server.sock")
    for hello in ({"t": P.HELLO, "id": 1, "role": "client", "token": 12345, "v": P.PROTOCOL_VERSION},
                  {"t": P.HELLO, "id": 1, "role": "container", "cid": ["ta-1"], "token": "x", "v": 1}):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(sock_path)
            body = msgpack.packb(hello)
            s.sendall(struct.pack(">I", len(body)) + body)
            (n,) = struct.unpack(">I", _recv(s, 4))
            reply = msgpack.unpackb(_recv(s, n))
            assert reply == {"t": "res", "id": 1, "ok": False, "code": "auth", "msg": "malformed hello"}, reply
            assert s.recv(1) == b""


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
