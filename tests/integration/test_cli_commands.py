"""The commands a Modal user reaches for, in Modal's shapes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PROGRAMS = Path(__file__).parent / "programs"


def _hp(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "homeport.cli", *args], capture_output=True, text=True,
                          timeout=timeout, **kw)


@pytest.fixture(scope="module")
def deployed(platform, tmp_path_factory):
    program = tmp_path_factory.mktemp("cmd") / "commands_app.py"
    program.write_text((PROGRAMS / "commands_app.py").read_text())
    out = _hp("deploy", str(program), env={**os.environ, "COLUMNS": "80"})
    assert out.returncode == 0, out.stderr
    yield program, out
    _hp("app", "stop", "-y", "commands-app")


def test_deploy_hint_names_cls_from_name_on_one_line(deployed):
    _program, out = deployed
    hint = next(line for line in out.stdout.splitlines() if line.startswith("Call it with"))
    assert "modal.Cls.from_name('commands-app', 'Greeter')" in hint
    assert "modal.Function.from_name('commands-app', 'plant')" in hint
    assert hint.endswith("`homeport app stop commands-app`.")  # not wrapped at 80 columns


def test_app_list_shows_whole_ids_on_80_columns(deployed):
    rows = json.loads(_hp("app", "list", "--json").stdout)
    app_id = next(r["app_id"] for r in rows if r["name"] == "commands-app")
    assert app_id in _hp("app", "list", env={**os.environ, "COLUMNS": "80"}).stdout


def test_app_rollback_adds_a_version(deployed):
    import homeport

    program, _ = deployed
    program.write_text(program.read_text().replace('VERSION = "one"', 'VERSION = "two"'))
    assert _hp("deploy", str(program)).returncode == 0
    assert homeport.Function.from_name("commands-app", "plant").remote() == "two"
    out = _hp("app", "rollback", "commands-app")
    assert out.returncode == 0, out.stderr
    assert "rolled back to version 1" in out.stdout
    assert homeport.Function.from_name("commands-app", "plant").remote() == "one"
    history = json.loads(_hp("app", "history", "commands-app", "--json").stdout)
    assert [h["version"] for h in history] == [1, 2, 3]  # a rollback is a new version
    out = _hp("app", "rollback", "commands-app", "v2")
    assert out.returncode == 0 and "version 2" in out.stdout, out.stderr
    assert homeport.Function.from_name("commands-app", "plant").remote() == "two"
    bad = _hp("app", "rollback", "commands-app", "v99")
    assert bad.returncode == 1 and "no version 99" in bad.stderr


def test_volume_cp_and_rename_never_follow_a_containers_symlinks(deployed, platform):
    import homeport
    from homeport.volume import FileEntryType

    homeport.Function.from_name("commands-app", "plant").remote()

    def volume(name="commands-vol"):
        return homeport.Volume.from_name(name)

    def kinds(name="commands-vol"):
        return {e.path: e.type for e in volume(name).listdir("/", recursive=True)}

    out = _hp("volume", "cp", "commands-vol", "dir/file.txt", "copy.txt")
    assert out.returncode == 0, out.stderr
    assert b"".join(volume().read_file("copy.txt")) == b"inside"
    assert _hp("volume", "cp", "commands-vol", "dir", "dir2").returncode == 1  # a directory needs -r
    assert _hp("volume", "cp", "commands-vol", "-r", "dir", "dir2").returncode == 0
    assert b"".join(volume().read_file("dir2/file.txt")) == b"inside"
    # A planted symlink to a host file is copied as a link, never as the host file's contents.
    assert _hp("volume", "cp", "commands-vol", "evil", "evil-copy").returncode == 0
    assert kinds()["evil-copy"] == FileEntryType.SYMLINK
    # A destination through a planted symlink to a host directory is refused: nothing written there.
    out = _hp("volume", "cp", "commands-vol", "copy.txt", "escape/")
    assert out.returncode == 1 and "link" in out.stderr, out.stderr
    out = _hp("volume", "cp", "commands-vol", "copy.txt", "escape/planted.txt")
    assert out.returncode == 1 and not os.path.exists("/etc/planted.txt") and not os.path.exists("/etc/copy.txt")
    # rename
    assert _hp("volume", "rename", "commands-vol", "../evil").returncode == 1
    assert _hp("volume", "rename", "-y", "commands-vol", "commands-vol2").returncode == 0
    assert "copy.txt" in _hp("volume", "ls", "commands-vol2").stdout
    assert _hp("volume", "rename", "-y", "commands-vol2", "commands-vol").returncode == 0


def test_container_exec_runs_in_the_container(deployed):
    import homeport

    homeport.Cls.from_name("commands-app", "Greeter")().hello.remote()
    rows = json.loads(_hp("container", "list", "--json").stdout)
    cid = next(r["container_id"] for r in rows if r["function"] == "Greeter" and r["state"] != "stopping")
    out = _hp("container", "exec", cid, "sh", "-c", "echo id=$HOMEPORT_CONTAINER_ID token=$HOMEPORT_CONTAINER_TOKEN")
    assert out.returncode == 0, out.stderr
    assert f"id={cid} token=\n" in out.stdout  # its environment, without its credentials
    assert _hp("container", "exec", cid, "sh", "-c", "exit 3").returncode == 3
    assert _hp("container", "exec", "ta-nope", "true").returncode == 1


def test_shell_of_a_function_ref_says_what_is_not_built(tmp_path):
    out = _hp("shell", "app.py::f")
    assert out.returncode == 1 and "UnimplementedError" in out.stderr and "homeport shell ta-" in out.stderr
    modal = subprocess.run([sys.executable, "-m", "homeport.cli._modal", "shell", "app.py::f"],
                           capture_output=True, text=True, timeout=60)
    assert modal.returncode == 1 and "homeport shell ta-" in modal.stderr  # `modal shell` is the same command
