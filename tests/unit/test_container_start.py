"""What a container starts with: its environment, the key of the template it is forked from (pure)."""

from homeport.server.images import BuiltImage


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
