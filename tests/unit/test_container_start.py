"""What a container starts with: its environment, the key of the template it is forked from (pure)."""

import pytest

from homeport.backends import Mount
from homeport.image_builder import BuiltImage
from homeport.server.templates import container_template


def _image(**kw):
    return BuiltImage(image_id="im-1", layer="l", venv="/images/l/venv", python_version="3.11", **kw)


def test_a_container_keeps_only_the_basics_of_the_control_planes_environment():
    server_env = {
        "PATH": "/usr/bin:/bin", "HOME": "/home/u", "LANG": "C.UTF-8", "LC_ALL": "C", "TZ": "UTC", "TERM": "xterm",
        "USER": "u", "LOGNAME": "u",
        "AWS_SECRET_ACCESS_KEY": "from the shell", "PYTHONPATH": "/home/u/src", "HOMEPORT_STATE_DIR": "/s",
        "VIRTUAL_ENV": "/home/u/.venv", "SSH_AUTH_SOCK": "/tmp/agent",
    }
    env = _image(env={"FROM_IMAGE": "1"}).environ(server_env, "/runtime")
    assert "AWS_SECRET_ACCESS_KEY" not in env and "SSH_AUTH_SOCK" not in env and "HOMEPORT_STATE_DIR" not in env
    assert "PYTHONPATH" not in env  # the caller's interpreter settings are not the image's
    assert {k: env[k] for k in ("HOME", "LANG", "LC_ALL", "TZ", "TERM", "USER", "LOGNAME")} == {
        "HOME": "/home/u", "LANG": "C.UTF-8", "LC_ALL": "C", "TZ": "UTC", "TERM": "xterm", "USER": "u", "LOGNAME": "u"}
    assert env["PATH"] == "/images/l/venv/bin:/usr/bin:/bin"
    assert env["VIRTUAL_ENV"] == "/images/l/venv" and env["HOMEPORT_RUNTIME_PATH"] == "/runtime"
    assert env["FROM_IMAGE"] == "1"


def test_the_images_python_path_is_the_only_pythonpath():
    env = _image(python_path=["/staged/root"], env={"PYTHONPATH": "/in/image"}).environ({"PYTHONPATH": "/x"}, "/rt")
    assert env["PYTHONPATH"] == "/in/image:/staged/root"


# --- template keys ---------------------------------------------------------------------------------

ARGV = ("/images/l/venv/bin/python", "-m", "homeport.runtime")
SNAP = {"snapshot": True, "tag": "Model", "module_name": "m", "module_file": None, "qualname": "Model",
        "app_id": "ap-1", "function_id": "fu-1"}


def test_a_template_key_cannot_be_recomputed_without_the_control_planes_own_key():
    """Keys appear in logs and file names and cover secret values: guessing a secret and hashing what
    the key covers must not confirm the guess."""
    env = {"PATH": "/bin", "DB_PASSWORD": "hunter2"}
    one = container_template(SNAP, ARGV, env, {}, salt=b"a" * 32).key
    assert one == container_template(SNAP, ARGV, dict(env), {}, salt=b"a" * 32).key
    assert one != container_template(SNAP, ARGV, env, {}, salt=b"b" * 32).key  # keyed: the salt is needed
    changed = container_template(SNAP, ARGV, {**env, "DB_PASSWORD": "other"}, {}, salt=b"a" * 32).key
    assert changed != one  # a changed secret still makes a new snapshot
    assert "hunter2" not in one


def test_a_template_key_ignores_the_containers_own_values_and_covers_its_view():
    salt = b"s" * 32
    env = {"HOMEPORT_CONTAINER_ID": "ta-1", "HOMEPORT_CONTAINER_TOKEN": "t1", "HOMEPORT_STARTED_AT": "1.0"}
    other = {"HOMEPORT_CONTAINER_ID": "ta-2", "HOMEPORT_CONTAINER_TOKEN": "t2", "HOMEPORT_STARTED_AT": "2.0"}
    assert container_template(SNAP, ARGV, env, {}, salt=salt).key == container_template(SNAP, ARGV, other, {}, salt=salt).key
    assert container_template({**SNAP, "app_id": "ap-2"}, ARGV, env, {}, salt=salt).key == \
        container_template(SNAP, ARGV, env, {}, salt=salt).key  # another run of the same app: the same snapshot
    vol = (Mount("/state/volumes/v", "/data"),)
    plain = container_template({}, ARGV, env, {"A": "1"}, salt=salt)
    mounted = container_template({}, ARGV, env, {"A": "1"}, salt=salt, mounts=vol)
    assert plain.key.startswith("rt-") and plain.key != mounted.key  # a template sees its containers' volumes
    assert mounted.mounts == vol and mounted.env == {"A": "1"}
    assert container_template(SNAP, ARGV, env, {}, salt=salt, cwd="/a").key != \
        container_template(SNAP, ARGV, env, {}, salt=salt, cwd="/b").key


# --- a forked container's own root in a root file system image ---------------------------------------

MOUNTINFO = """\
1 0 0:1 / / rw - overlay homeport-root rw
2 1 0:2 / /dev rw - devtmpfs dev rw
3 2 0:3 / /dev/pts rw - devpts devpts rw
4 1 0:4 / /proc rw - proc proc rw
5 1 8:1 /vol /data rw - ext4 /dev/vda rw
6 5 8:1 /sub /data/inner rw - ext4 /dev/vda rw
7 1 8:1 /x /tmp/with\\040space ro - ext4 /dev/vda rw
"""


def test_the_mounts_a_forked_container_carries_into_its_own_root():
    from homeport.runtime._mountns import mount_points, outermost

    points = mount_points(MOUNTINFO)
    assert points[-1] == "/tmp/with space"
    # A recursive bind of each carries what is mounted below it; the root itself becomes the lower layer.
    assert outermost(points) == ["/data", "/dev", "/proc", "/tmp/with space"]


def test_the_new_root_is_assembled_where_nothing_is_mounted(tmp_path, monkeypatch):
    from homeport.runtime import _mountns

    for d in ("run", "mnt"):
        (tmp_path / d).mkdir()
    monkeypatch.setattr(_mountns, "SCRATCH_DIRS", (str(tmp_path / "run"), str(tmp_path / "mnt")))
    assert _mountns.scratch_dir(["/", str(tmp_path / "run") + "/secrets"]) == str(tmp_path / "mnt")
    with pytest.raises(OSError, match="plain directory"):
        _mountns.scratch_dir([str(tmp_path / "run"), str(tmp_path / "mnt")])


def test_the_start_up_column_shows_each_phase_in_order():
    from homeport.cli._containers import format_startup

    timeline = {"restore": 0.0012, "enter:connect": 0.0304, "ready": 0.0351}
    assert format_startup(timeline) == "35ms: restore 1.2ms · enter:connect 30ms"
    assert format_startup({"process": 0.105, "import": 0.003, "ready": 0.12}) == "120ms: process 105ms · import 3.0ms"
    assert format_startup({}) == "-" and format_startup({"ready": 0.002}) == "2.0ms"
