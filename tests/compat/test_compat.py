"""Modal programs, written as Modal's documentation writes them (`import modal`), run unchanged the ways a
Modal user runs them: `python prog.py`, `python -m pkg.prog`, `modal run`, `modal serve`, `modal deploy`.

Each program checks its own results and prints `COMPAT OK <name>`; a test passes when the program exits
0 having printed it.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PROGRAMS = Path(__file__).parent / "programs"
TESTS = Path(__file__).parents[1]


def modal_command() -> list[str]:
    """The `modal` console script installed with Homeport (next to this interpreter)."""
    script = Path(sys.executable).parent / "modal"
    return [str(script)] if script.exists() else [sys.executable, "-m", "homeport.cli._modal"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("HOMEPORT_MODAL", None)  # the default: Homeport, as Modal's client is not installed here
    return env


def run(cmd: list[str], cwd: Path = PROGRAMS, timeout: float = 150) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=_env())


def assert_ok(out: subprocess.CompletedProcess, name: str) -> None:
    assert out.returncode == 0 and f"COMPAT OK {name}" in out.stdout, (out.stdout[-3000:], out.stderr[-3000:])


@pytest.fixture(scope="module")
def compat_secret(platform):
    out = run([*modal_command(), "secret", "create", "compat-secret", "API_KEY=s3cr3t", "--force"])
    assert out.returncode == 0, out.stderr


PYTHON_PROGRAMS = {
    "getting_started": "getting_started",
    "generators": "generators",
    "async_functions": "async",
    "spawn_gather": "spawn_gather",
    "batching": "batching",
    "with_options": "with_options",
    "images": "images",
    "schedules": "schedules",
    "web_endpoints": "web_endpoints",
    "servers": "servers",
    "gpu_partial": "gpu_partial",
    "subprocesses": "subprocesses",
    "snapshots": "snapshots",
    "tunnels": "tunnels",
    "tunnel_abuse": "tunnel_abuse",
    "sessions": "sessions",
}


@pytest.mark.parametrize("program", sorted(PYTHON_PROGRAMS))
def test_plain_python(platform, program):
    """`python prog.py`: the `if __name__ == "__main__": with app.run(): ...` pattern."""
    assert_ok(run([sys.executable, f"{program}.py"]), PYTHON_PROGRAMS[program])


def test_secrets_with_plain_python(platform, compat_secret):
    assert_ok(run([sys.executable, "secrets_app.py"]), "secrets")


@pytest.mark.parametrize("program", ["getting_started", "async_functions", "batching", "servers"])
def test_modal_run(platform, program):
    """`modal run prog.py`: the local entrypoint runs here, inside the running app."""
    assert_ok(run([*modal_command(), "run", f"{program}.py"]), PYTHON_PROGRAMS[program])


def test_modal_run_one_function_and_module_mode(platform, compat_secret):
    out = run([*modal_command(), "run", "secrets_app.py::main"])
    assert_ok(out, "secrets")
    # `python -m pkg.mod` and `modal run -m pkg.mod`: the module is imported by its dotted name.
    assert_ok(run([sys.executable, "-m", "compat.programs.spawn_gather"], cwd=TESTS), "spawn_gather")
    assert_ok(run([*modal_command(), "run", "-m", "compat.programs.generators"], cwd=TESTS), "generators")


def test_modal_serve_serves_the_web_endpoints_until_stopped(platform):
    proc = subprocess.Popen([*modal_command(), "serve", "servers.py"], cwd=PROGRAMS, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        urls: dict[str, str] = {}
        deadline = time.monotonic() + 90
        assert proc.stdout is not None
        while len(urls) < 2 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            m = re.search(r"web endpoint for (\w+)\W+(http://127\.0\.0\.1:\d+)", line)
            if m:
                urls[m.group(1)] = m.group(2)
        assert set(urls) == {"FileServer", "Private"}, urls
        with urllib.request.urlopen(urls["FileServer"], timeout=60) as r:
            assert r.status == 200 and b"Directory listing" in r.read()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_modal_deploy_history_and_lookups_by_name(platform):
    modal = modal_command()
    out = run([*modal, "deploy", "deployed.py", "--tag", "first"])
    assert out.returncode == 0, out.stderr
    out = run([*modal, "deploy", "deployed.py"])
    assert out.returncode == 0, out.stderr
    out = run([*modal, "app", "history", "compat-deployed", "--json"])
    assert out.returncode == 0, out.stderr
    history = json.loads(out.stdout)
    versions = [int(h["version"].removeprefix("v")) for h in history]
    assert versions == sorted(versions, reverse=True) and len(versions) >= 2  # newest first
    newest, first = history[0], history[1]
    assert {"version", "time_deployed", "client", "deployed_by", "commit"} <= set(newest)
    assert "tag" not in newest and first["tag"] == "first"
    # Another program calls it by name: Function.from_name, Server.from_name, a version.
    assert_ok(run([sys.executable, "call_deployed.py"]), "call_deployed")
    check = (
        "import modal\n"
        f"assert modal.Function.from_name('compat-deployed', 'shout', version={newest['version']!r}).remote('a') == 'A!'\n"
        f"old = modal.Function.from_name('compat-deployed', 'shout', version={first['version']!r})\n"
        "try:\n    old.remote('a')\nexcept modal.exception.UnimplementedError as e:\n    print('COMPAT OK', e)\n"
    )
    assert_ok(run([sys.executable, "-c", check]), "")
    out = run([*modal, "app", "stop", "compat-deployed"])
    assert out.returncode == 0, out.stderr


def test_modal_help_lists_modal_groups():
    out = run([*modal_command(), "--help"])
    assert out.returncode == 0, out.stderr
    for group in ("run", "deploy", "serve", "app", "container", "volume", "secret", "server", "token"):
        assert re.search(rf"^\W*{group}\s", out.stdout, re.M), (group, out.stdout)
    out = run([*modal_command(), "app", "--help"])
    for sub in ("list", "stop", "history", "logs"):
        assert re.search(rf"^\W*{sub}\s", out.stdout, re.M), (sub, out.stdout)


def test_modal_volume_commands(platform, tmp_path):
    modal = modal_command()
    src = tmp_path / "a.txt"
    src.write_text("volume data")
    for args in (["create", "compat-cli-vol"], ["put", "compat-cli-vol", str(src), "/a.txt"],
                 ["cp", "compat-cli-vol", "/a.txt", "/b.txt"]):
        out = run([*modal, "volume", *args])
        assert out.returncode == 0, (args, out.stderr)
    out = run([*modal, "volume", "get", "compat-cli-vol", "/b.txt", "-"])
    assert out.returncode == 0 and out.stdout == "volume data", out.stderr
    out = run([*modal, "volume", "delete", "compat-cli-vol", "--yes"])
    assert out.returncode == 0, out.stderr
