"""`modal.Sandbox` end to end: programs that say `import modal`, run with `homeport run`, real containers."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import psutil
import pytest

from homeport.testing import homeport_cli, machine_address, wait_for

PROGRAM = str(Path(__file__).parent / "programs" / "sandboxes.py")

pytestmark = pytest.mark.timeout(300)


def run(entry: str, *args: str, timeout: float = 180) -> dict:
    out = homeport_cli("run", f"{PROGRAM}::{entry}", *args, timeout=timeout)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert out.returncode == 0 and lines, f"{entry} failed:\n{out.stdout}\n{out.stderr}"
    return json.loads(lines[-1][len("RESULT "):])


def _rootfs_missing():
    from homeport.image_builder.rootfs import DebianBase, missing

    return None if DebianBase().ready and missing() is None else missing() or "the Debian base is not built yet"


def _processes_named(token: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if any(token in part for part in p.info["cmdline"] or ()):
            found.append(p)
    return found


def test_code_interpreter_loop_over_stdin_and_stdout(platform):
    out = run("interpreter")
    answers = out["answers"]
    assert answers[0] == {"stdout": ""}
    assert answers[1] == {"stdout": "42\n"}  # the state of one command is there for the next
    assert answers[2] == {"stdout": "True 43\n"}
    assert answers[3]["error"].startswith("ZeroDivisionError")
    assert out["code"] == 0 and out["rest"] == ""  # the loop ended at stdin's end


def test_concurrent_execs_each_with_their_own_streams(platform):
    out = run("concurrent")
    assert out["python"] == ["py to-python\n", "", 0]
    assert out["sh"] == ["sh to-sh\n", "err-sh\n", 0]


@pytest.mark.timeout(900)
@pytest.mark.skipif(_rootfs_missing() is not None, reason=f"no root file system images here: {_rootfs_missing()}")
def test_concurrent_execs_in_an_image_with_its_own_root(platform):
    out = run("concurrent", "--rootfs", timeout=800)
    assert out["python"][0] == "py to-python\n" and out["sh"][:2] == ["sh to-sh\n", "err-sh\n"]
    assert out["perl"] == ["perl to-perl\n", "", 0]
    assert out["cat"] == ["built\n", "", 0]  # written by the image's build step


def test_output_arrives_while_the_command_runs(platform):
    out = run("live")
    assert "".join(out["chunks"]) == "".join(f"line {i}\n" for i in range(1, 7))
    assert len(out["chunks"]) > 1  # chunks as they were printed, not all at the exit
    assert out["running_at_first"] is True  # the first chunk arrived before the process exited
    assert out["code"] == 0
    assert out["lines"] == ["a\n", "bc\n", "d\n"]  # bufsize=1: whole lines, across chunk boundaries
    assert out["raw"] == [255, *b"bytes"] and out["raw_is_bytes"] is True  # text=False: bytes
    assert out["tty"].startswith("/dev/pts/") and "to-stderr" in out["tty"]  # pty=True: one terminal
    assert out["merged"] == ["err", "out"] and out["quiet"] == ""  # StreamType.STDOUT, StreamType.DEVNULL


def test_environment_stdin_workdir_and_idle_timeout(platform):
    out = run("environment")
    assert out["main"] == "from stdin\nA=1 B=2\n" and out["rc"] == 0
    assert out["exec"] == "A=1 C=3 D=4 /work-here\n" and out["workdir_exec"] == "/tmp\n"
    assert out["idle"] == 124  # ended after 2 s without an exec


def test_timeout_and_terminate_return_124_and_137_and_leave_nothing_behind(platform):
    token = f"hp-sbx-{secrets.token_hex(4)}"
    proc = subprocess.Popen([sys.executable, "-m", "homeport.cli", "run", f"{PROGRAM}::lifecycle", "--token", token],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        assert wait_for(lambda: any("PIDS-READY" in line for line in lines), timeout=120), "".join(lines)
        # The second sandbox's own command and what its exec left running (nohup, in the background).
        assert wait_for(lambda: len(_processes_named(f"{token}-x")) == 1 and _processes_named(f"{token}-main"))
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(5)
    proc.stdout.close()
    result = json.loads(next(line for line in lines if line.startswith("RESULT "))[len("RESULT "):])
    assert result["poll_running"] is None and result["returncode_running"] is None
    assert result["timeout_raised"] == "SandboxTimeoutError" and result["timeout_rc"] == 124
    assert result["terminated_raised"] == "SandboxTerminatedError" and result["terminate_rc"] == 137
    assert result["long_code"] == 137  # an exec running when its sandbox ends
    assert result["exit_rc"] == 7 and result["exit_stdout"] == "bye\n"  # the command's own exit code and output
    assert result["killed"] == 128 + 9 and result["timed"] == -1
    assert result["returncode_before_wait"] == "InvalidError"
    assert result["rc_after_terminate_wait"] == 137
    # Nothing the sandboxes started outlives them: the setsid'd sleep (timeout), the nohup one (terminate).
    assert wait_for(lambda: not _processes_named(token), timeout=15), [p.info for p in _processes_named(token)]


def test_rm_rf_inside_a_sandbox_leaves_the_host_and_other_containers_alone(platform):
    marker_dir = tempfile.mkdtemp(prefix="hp-sbx-marker-", dir="/var/tmp")
    marker = os.path.join(marker_dir, "keep")
    Path(marker).write_text("host file\n")
    try:
        out = run("rm_rf", "--marker", marker)
        assert out["rm"] == "done\n/bin/sh\n"  # the host's directories are read-only in it
        assert out["marker_inside"] == "host file\n"  # it could see the host's file, read-only
        assert Path(marker).read_text() == "host file\n"
        assert out["other_file"] == "keep\n" and out["other_python"] == "2\n"
        # The control plane still runs its containers.
        assert run("concurrent")["python"][2] == 0
    finally:
        Path(marker).unlink(missing_ok=True)
        os.rmdir(marker_dir)



@pytest.mark.parametrize("rootfs", [False, pytest.param(True, marks=[pytest.mark.timeout(900), pytest.mark.skipif(
    _rootfs_missing() is not None, reason=f"no root file system images here: {_rootfs_missing()}")])])
def test_a_sandboxs_network_is_its_own_with_http_out_through_the_proxy(platform, rootfs):
    import http.server

    host = machine_address()
    if host is None:
        pytest.skip("this machine has no address but loopback")

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"hello from the host\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((host, 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        out = run("network", "--host", host, "--port", str(server.server_address[1]),
                  *(["--rootfs"] if rootfs else []), timeout=800)
    finally:
        server.shutdown()
        server.server_close()
    opened = out["open"]
    assert opened["http"] == "200 hello from the host"  # HTTP out, through the proxy
    assert opened["connect"] == ["HTTP/1.1 200 Connection established", "hello from the host"]
    assert opened["raw"].startswith("failed")  # no route but the proxy: its network is its own
    assert opened["loopback"][0].startswith("HTTP/1.1 403") and "loopback" in opened["loopback"][1]  # not the machine's
    blocked = out["blocked"]
    assert blocked["http"].startswith("failed") and blocked["raw"].startswith("failed") and "loopback" not in blocked
    assert out["cidr_refused"]["http"].startswith("403") and "outbound_cidr_allowlist" in out["cidr_refused"]["http"]
    assert out["cidr_allowed"]["http"] == "200 hello from the host"
    assert out["domain_refused"]["http"].startswith("403") and "outbound_domain_allowlist" in out["domain_refused"]["http"]


def test_a_sandbox_cannot_use_another_sandboxs_way_out(platform):
    host = machine_address()
    if host is None:
        pytest.skip("this machine has no address but loopback")
    server = socket.socket()
    server.bind((host, 0))
    server.listen(16)
    try:
        out = run("egress_abuse", "--host", host, "--port", str(server.getsockname()[1]))
    finally:
        server.close()
    assert out.get("own", "").startswith("HTTP/1.1 403"), out  # its own proxy: its own allowlist
    # Another's proxy: out of its view (each sandbox sees only its own directory of sockets), and would
    # not take its token anyway.
    assert out.get("other") in ("closed", "FileNotFoundError", "PermissionError"), out


def test_http_server_through_its_tunnel_after_wait_until_ready(platform):
    out = run("tunnel")
    assert out["url"].startswith("http://127.0.0.1:") and out["ports"] == [8000]
    assert out["body"] == "hello from the sandbox\n"
    assert out["exec_probe"] == "ready"


def test_two_sandboxes_listen_on_one_port_each_behind_its_own_tunnel(platform):
    out = run("same_port")
    assert out["bodies"][:2] == ["first\n", "second\n"]  # each its own server, on the same port
    assert out["bodies"][2].startswith("failed")  # inbound_cidr_allowlist: its tunnel's clients are not in it
    assert out["rcs"] == [None, None, None]


def test_a_slow_reader_keeps_the_control_plane_and_the_agent_small(platform):
    """200 MiB written by an exec whose reader takes 10 s to start keeping up: the output waits in the
    command (its pipe), not in the control plane, the agent or the reader's process."""
    def rss(procs: list[psutil.Process]) -> int:
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    control_plane = psutil.Process(platform.pid)
    base = control_plane.memory_info().rss
    peaks = {"control_plane": 0, "agent": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peaks["control_plane"] = max(peaks["control_plane"], control_plane.memory_info().rss - base)
            agents = [p for p in platform.server_processes()
                      if "homeport.runtime._sandbox_agent" in " ".join(_cmdline(p))]
            peaks["agent"] = max(peaks["agent"], rss(agents))
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out = run("flood", "--mb", "200")
    finally:
        done.set()
        sampler.join(5)
    assert out["total"] == 200 << 20 and out["code"] == 0
    limit = 100 << 20  # generous: the window is 8 MiB a stream
    assert peaks["control_plane"] < limit, peaks
    assert 0 < peaks["agent"] < limit, peaks  # the agent's whole process (a Python interpreter)
    assert out["client_growth_mib"] < 100, out


def test_an_exec_whose_reader_left_runs_to_its_end(platform):
    first = run("unwatched_start")
    assert first["first"] is True
    assert run("unwatched_check", "--sandbox-id", first["id"])["finished"] is True


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def test_from_id_from_name_list_and_tags_from_a_second_program(platform):
    name = f"kept-{secrets.token_hex(3)}"
    first = run("create_detached", "--name", name)
    assert first["dup"] == "AlreadyExistsError"
    listed = json.loads(homeport_cli("container", "list", "--json").stdout)
    assert any(c["container_id"] == first["id"] and c["function"] == "sandbox" for c in listed)
    second = run("use_detached", "--sandbox-id", first["id"], "--name", name, "--app-id", first["app_id"])
    assert second["same"] is True and second["state"] == "from-first\n"
    assert first["id"] in second["tagged"] and first["id"] not in second["retagged"]  # set_tags replaced them
    assert second["rc"] == 137 and first["id"] not in second["listed_after"]  # list: running ones only
    assert second["unknown"] == "NotFoundError"


def test_filesystem(platform):
    out = run("files")
    assert out["text"] == "text" and out["bytes"] == [0, 1] and out["back"] == "text"
    assert out["listed"] == ["b", "bin", "copied"] and out["stat"] == len("local file")
    assert out["seen_by_exec"] == "local file"
    assert out["missing"] == "SandboxFilesystemNotFoundError"
    assert out["host_write"].startswith("SandboxFilesystem")  # the host's /etc is read-only inside
    assert not os.path.exists("/etc/hp-should-not-exist")


def test_a_function_creates_a_sandbox_of_its_own_app(platform):
    out = run("from_function")
    assert out["inside"] == "inner <id>\n"
    # Another app's sandbox (not deployed), a named secret, a volume its function does not mount: refused.
    assert out["foreign"] == "AuthError AuthError AuthError"


def test_code_in_a_sandbox_cannot_pose_as_its_agent_or_a_client(platform):
    out = run("impersonate")
    assert out["out"] == "{'sandbox': False, 'client': False}\n", out["err"]  # it read the token, and was refused
    assert out["still_works"] == "ok\n"


def test_the_async_forms(platform):
    assert run("aio") == {"out": "one\ntwo\n", "code": 0, "listed": True, "text": "async", "rc": 137}


def test_stopping_the_app_stops_its_sandboxes(platform):
    out = run("app_stop")
    listed = json.loads(homeport_cli("container", "list", "--json").stdout)
    assert wait_for(lambda: not any(c["container_id"] == out["id"]
                                    for c in json.loads(homeport_cli("container", "list", "--json").stdout)), 20), listed


@pytest.mark.timeout(900)
@pytest.mark.skipif(_rootfs_missing() is not None, reason=f"no root file system images here: {_rootfs_missing()}")
def test_a_volume_shared_by_two_users_keeps_their_permissions(platform):
    out = run("two_users", "--volume", f"sb-users-{secrets.token_hex(3)}", timeout=800)
    assert out["setup"] == 0 and out["alice_write"] == 0
    assert out["bob_read_private"][0] != 0 and "Permission denied" in out["bob_read_private"][1]
    assert out["bob_read_shared_600"] != 0
    assert out["bob_delete_sticky"] != 0  # /data/shared is sticky: bob cannot delete alice's file
    assert out["alice_read"] == "secret\n"


def test_sandbox_processes_are_children_of_the_control_plane(platform):
    """While a sandbox runs, its processes are in the control plane's tree (stopped with it)."""
    token = f"hp-sbx-tree-{secrets.token_hex(4)}"
    code = ("import modal, time\napp = modal.App.lookup('sandbox-tree', create_if_missing=True)\n"
            f"sb = modal.Sandbox.create('python', '-c', 'import time; time.sleep(60)', '{token}', app=app)\n"
            "print(sb.object_id, flush=True)\n")
    script = Path(tempfile.mkdtemp()) / "tree.py"
    script.write_text(code + "@app.local_entrypoint()\ndef main():\n    pass\n")
    try:
        out = homeport_cli("run", str(script))
        assert out.returncode == 0, out.stderr
        sandbox_id = out.stdout.split()[0]
        assert wait_for(lambda: _processes_named(token), timeout=30)
        tree = {p.pid for p in platform.server_processes()}
        assert all(p.pid in tree for p in _processes_named(token))
        assert homeport_cli("container", "stop", sandbox_id).returncode == 0
        assert wait_for(lambda: not _processes_named(token), timeout=15)
    finally:
        for p in _processes_named(token):
            p.kill()


POOL = str(Path(__file__).parent / "programs" / "sandbox_pool.py")


def _pool(entry: str, *args: str, timeout: float = 400) -> dict:
    out = homeport_cli("run", f"{POOL}::{entry}", *args, timeout=timeout)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert out.returncode == 0 and lines, f"{entry} failed:\n{out.stdout}\n{out.stderr}"
    return json.loads(lines[-1][len("RESULT "):])


def _probe_wheel(directory: Path) -> None:
    """A one-module wheel (`hp_pool_probe`), so that a pip install needs no package index."""
    import zipfile

    files = {"hp_pool_probe.py": "VALUE = 'from-the-wheel'\n",
             "hp_pool_probe-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: hp-pool-probe\nVersion: 0.1\n",
             "hp_pool_probe-0.1.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                 "Tag: py3-none-any\n"}
    files["hp_pool_probe-0.1.dist-info/RECORD"] = "".join(f"{name},,\n" for name in files) \
        + "hp_pool_probe-0.1.dist-info/RECORD,,\n"
    with zipfile.ZipFile(directory / "hp_pool_probe-0.1-py3-none-any.whl", "w") as whl:
        for name, text in files.items():
            whl.writestr(name, text)


@pytest.mark.timeout(600)
def test_a_function_keeps_a_pool_of_sandboxes_with_their_own_image(platform):
    """Modal's sandbox_pool: functions create sandboxes from an image of their own (env, a pip install
    confined to a build container), wait until they are ready, hand out tunnel URLs, terminate them."""
    wheels = Path(tempfile.mkdtemp(prefix="hp-pool-wheels-", dir="/var/tmp"))
    try:
        _probe_wheel(wheels)
        out = _pool("pool", "--wheels", str(wheels))
    finally:
        for f in wheels.iterdir():
            f.unlink()
        wheels.rmdir()
    assert out["outs"] == ["warm\nfrom-the-wheel\n"] * 2
    assert out["statuses"] == [200, 200] and out["distinct"] == 2
    assert out["terminated"] == 2 and out["codes"] == [137, 137]
    assert len(out["apps"]) == 1 and out["apps"] != [out["pool_app"]]  # in the app App.lookup made for them


def test_a_container_cannot_have_a_sandbox_image_read_the_hosts_files(platform):
    out = _pool("abuse", "--state-dir", str(platform.state_dir))
    for what in ("shadow", "state_dir", "raw_files", "requirements", "run_function"):
        assert out[what].startswith("AuthError") and "control plane" in out[what], (what, out[what])
        assert "own machine's disk" in out[what] or "its own disk" in out[what], (what, out[what])
    assert out["smuggled"].startswith("AuthError") and "files" in out["smuggled"]  # a key of another kind's
    assert out["image_id"].startswith("AuthError") and "image id" in out["image_id"]
    assert out["image_build"].startswith("AuthError")  # no image builds of its own either
