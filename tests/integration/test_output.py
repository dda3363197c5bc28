"""What a user sees of their containers: live output, short errors, logs, detach."""

import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from homeport.testing import Logs, running, wait_for

pytestmark = pytest.mark.integration

PROGRAMS = Path(__file__).parent / "programs"


def _cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "homeport.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _read_until(proc: subprocess.Popen, wanted: list[str], seen: list[str], limit: float = 60) -> None:
    """Read the process's stdout and stderr lines (into `seen`) until every string of `wanted` is in one.
    Raw reads: a buffered reader would keep lines that `select` no longer reports."""
    deadline = time.monotonic() + limit
    fds = {proc.stdout.fileno(): b"", proc.stderr.fileno(): b""}
    while fds and time.monotonic() < deadline:
        if all(any(w in line for line in seen) for w in wanted):
            return
        ready, _, _ = select.select(list(fds), [], [], 1)
        for fd in ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                del fds[fd]
                continue
            *lines, fds[fd] = (fds[fd] + chunk).split(b"\n")
            seen.extend(line.decode() + "\n" for line in lines)
    assert all(any(w in line for line in seen) for w in wanted), (wanted, seen)


def test_container_output_streams_live_without_flush(platform, tmp_path):
    # The function prints (no flush=True) and then waits for a gate that only this test opens, once it
    # has seen the line: the line must arrive while the function still runs, stdout and stderr alike.
    proc = _cli("run", str(PROGRAMS / "output_app.py"), "--gate-dir", str(tmp_path), "--n", "3")
    seen: list[str] = []
    try:
        for i in range(3):
            _read_until(proc, [f"] out line {i}", f"] err line {i}"], seen)
            assert not any("result" in line for line in seen), seen
            (tmp_path / f"gate-{i}").touch()
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "result done" in rest
    tagged = [line for line in seen if line.startswith("[talk ")]
    # stdout lines in the order written, stderr lines too
    assert [line.split("] ", 1)[1] for line in tagged if "out line" in line] == [f"out line {i}\n" for i in range(3)]
    assert [line.split("] ", 1)[1] for line in tagged if "err line" in line] == [f"err line {i}\n" for i in range(3)]


def test_a_web_handlers_print_arrives_from_a_forked_container(platform):
    # Web containers are forked from a template by default: a copy's output must not wait in the
    # template's buffers (where it would appear never, or only when the container exited).
    with running("output_app", path=PROGRAMS) as output_app, Logs() as logs:
        r = httpx.get(output_app.handler.web_url, params={"word": "xyzzy"}, timeout=60)
        assert r.status_code == 200 and r.json() == {"word": "xyzzy"}
        # The container keeps running (it is warm): the line arrives anyway.
        assert wait_for(lambda: "web handler says xyzzy" in logs.text("handler"), timeout=30), logs.lines


def test_a_cold_map_cancels_the_containers_it_no_longer_needs(platform):
    # Scale-out containers told to stop before they are ready are cancelled at once (no exit hook
    # is owed), not sent SIGTERM and killed after the grace period with "exit hooks were cut short".
    log = platform.state_dir / "server.log"
    start = log.stat().st_size
    out = subprocess.run([sys.executable, "-m", "homeport.cli", "run", str(PROGRAMS / "cold_map.py")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"total {sum(x * x for x in range(1000))}" in out.stdout
    assert "cut short" not in out.stdout + out.stderr
    with open(log, errors="replace") as f:
        f.seek(start)
        text = f.read()
    cancelled = re.findall(r"cancelling \(not ready\) container (\S+):", text)
    assert cancelled, text[-3000:]  # it scaled out, and stopped the extra containers before they were ready
    for cid in cancelled:
        # cancelled at once: killed, not asked to stop and killed after the grace period
        assert f"container {cid} exited (killed by signal SIGKILL)" in text, text[-3000:]
        assert f"Container {cid} of 'square' was killed" not in text


def _no_internal_frames(text: str) -> None:
    import click

    import homeport

    for root in (os.path.dirname(homeport.__file__), os.path.dirname(click.__file__), "rich_click", "<frozen"):
        assert root not in text, text
    assert "/homeport/runtime/" not in text, text


@pytest.mark.parametrize("quiet", [False, True])
def test_a_remote_error_shows_the_users_traceback_once(platform, quiet):
    out = subprocess.run([sys.executable, "-m", "homeport.cli", "run", *(["-q"] if quiet else []),
                          str(PROGRAMS / "error_app.py")], capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert text.count('raise ValueError(f"bad value {x}")') == 1, text  # the remote frame, once
    assert text.count("f.remote(3)") == 1, text  # the local frame of the entrypoint
    assert "ValueError: bad value 3" in text
    _no_internal_frames(text)
    # with HOMEPORT_TRACEBACK=1, Homeport's own frames too
    out = subprocess.run([sys.executable, "-m", "homeport.cli", "run", "-q", str(PROGRAMS / "error_app.py")],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "HOMEPORT_TRACEBACK": "1"})
    assert "homeport/cli/_main.py" in out.stderr and out.returncode == 1


def test_a_syntax_error_in_the_app_file_is_short(tmp_path):
    bad = tmp_path / "bad_syntax.py"
    bad.write_text("import modal\n\napp = modal.App('bad')\n\ndef f(:\n    pass\n")
    out = subprocess.run([sys.executable, "-m", "homeport.cli", "run", str(bad)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1
    assert "SyntaxError" in out.stderr and f'File "{bad}", line 5' in out.stderr, out.stderr
    _no_internal_frames(out.stderr)
    assert len(out.stderr.splitlines()) <= 6, out.stderr


def test_ctrl_c_leaves_a_detached_app_running(platform, tmp_path):
    import json
    import signal

    import homeport

    proc = _cli("run", "-d", str(PROGRAMS / "detach_app.py"))
    seen: list[str] = []
    try:
        _read_until(proc, ["] work started"], seen)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "keeps running" in err, err
    apps = json.loads(subprocess.run([sys.executable, "-m", "homeport.cli", "app", "list", "--json"],
                                     capture_output=True, text=True, timeout=60).stdout)
    mine = [a for a in apps if a["name"] == "detach-app"]
    assert mine and mine[-1]["state"] == "detached", apps
    try:
        vol = homeport.Volume.from_name("detach-app-vol")
        gate = tmp_path / "gate"
        gate.write_text("open")
        with vol.batch_upload() as batch:  # the call the client made goes on, and finishes
            batch.put_file(str(gate), "/gate")
        assert wait_for(lambda: _read(vol, "finished") == b"yes", timeout=60)
    finally:
        subprocess.run([sys.executable, "-m", "homeport.cli", "app", "stop", "-y", mine[-1]["app_id"]],
                       capture_output=True, timeout=60)


def _read(vol, path: str) -> bytes | None:
    try:
        return b"".join(vol.read_file(path))
    except Exception:
        return None


def _hp(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "homeport.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_app_logs_keeps_history_filters_and_follows(platform):
    import homeport

    out = _hp("deploy", str(PROGRAMS / "logs_app.py"), timeout=120)
    assert out.returncode == 0, out.stderr
    try:
        speak = homeport.Function.from_name("logs-app", "speak")
        assert speak.remote("alpha") == "alpha"
        # History, while the (warm) container still runs: the last entries, then it exits.
        out = _hp("app", "logs", "logs-app")
        assert out.returncode == 0, out.stderr
        assert "said alpha\n" in out.stdout and "complained alpha\n" in out.stdout
        assert _hp("app", "logs", "logs-app", "-s", "stderr").stdout.strip().splitlines() == ["complained alpha"]
        assert _hp("app", "logs", "logs-app", "--search", "said").stdout.strip().splitlines() == ["said alpha"]
        assert len(_hp("app", "logs", "logs-app", "-n", "1").stdout.strip().splitlines()) == 1
        # ids: of the container and of the call, usable as filters
        shown = _hp("app", "logs", "logs-app", "--show-container-id", "--show-function-call-id", "--timestamps",
                    "--search", "said").stdout.split()
        _ts, call_id, cid = shown[:3]
        assert call_id.startswith("fc-") and cid.startswith("ta-"), shown
        assert "said alpha" in _hp("app", "logs", "logs-app", "--function-call", call_id).stdout
        assert "said alpha" in _hp("app", "logs", "logs-app", "--container", cid).stdout
        assert "said alpha" in _hp("app", "logs", "logs-app", "--function", "speak").stdout
        assert _hp("app", "logs", "logs-app", "--since", "1h").stdout.count("alpha") == 2
        assert _hp("app", "logs", "logs-app", "--until", "1h").stdout == ""
        assert "complained alpha" in _hp("container", "logs", cid).stdout
        bad = _hp("app", "logs", "logs-app", "--since", "yesterday-ish")
        assert bad.returncode == 2 and "--since" in bad.stderr

        # -f: what comes next, live, until the app stops
        follower = _cli("app", "logs", "-f", "logs-app")
        seen: list[str] = []
        try:
            assert speak.remote("beta") == "beta"
            _read_until(follower, ["said beta"], seen)
            assert _hp("app", "stop", "-y", "logs-app").returncode == 0
            follower.communicate(timeout=60)  # it ends by itself once the app has stopped
        finally:
            if follower.poll() is None:
                follower.kill()
                follower.communicate()
        assert follower.returncode == 0
    finally:
        _hp("app", "stop", "-y", "logs-app")
    # a stopped app's logs are still there, and reading them does not wait
    out = _hp("app", "logs", "logs-app", "-f")
    assert out.returncode == 0 and "said beta" in out.stdout, out.stderr


_SERVED = """
import modal

app = modal.App("served-once")


@app.function()
@modal.fastapi_endpoint()
def page():
    return "hello"
"""


def test_serve_refuses_a_second_serve_and_fails_loudly_when_the_control_plane_stops(platform, tmp_path):
    program = tmp_path / "served_once.py"
    program.write_text(_SERVED)
    first = _cli("serve", str(program))
    seen: list[str] = []
    try:
        _read_until(first, ["Serving"], seen, limit=120)
        url = next(m.group(1) for line in seen if (m := re.search(r"page => (http://\S+)", line)))
        assert httpx.get(url, timeout=60).json() == "hello"
        # A second serve of the same program is refused, loudly; the first one still serves.
        second = _hp("serve", str(program), timeout=60)
        assert second.returncode == 1 and "already being served" in second.stderr, second.stderr
        assert httpx.get(url, timeout=60).json() == "hello"
        # The control plane stops: serve does not go on saying "Serving" with a dead endpoint.
        platform.stop()
        _out, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
        if platform.pid is None:
            platform.start()
    assert first.returncode == 1
    assert "No longer serving" in err and "control plane" in err, err


def test_server_stop_during_a_run_says_so(platform):
    run = _cli("run", str(PROGRAMS / "long_app.py"))
    seen: list[str] = []
    try:
        _read_until(run, ["] slow started"], seen)
        stop = _hp("server", "stop")
        assert stop.returncode == 0
        assert re.search(r"Warning: \d+ apps? (is|are) running \(.*long-app", stop.stderr), stop.stderr  # a warning first
        _out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
        platform.stop()
        platform.start()
    assert run.returncode == 1
    assert "the control plane was stopped" in err, err
