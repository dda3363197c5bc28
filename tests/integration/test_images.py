"""Images end to end: each function sees its image's packages and nothing of the caller's.

Builds are cached in the session's state directory and packages come from uv's shared cache, so the
images here are built once per session (about a second in all once uv's cache has the wheels).
"""

import asyncio
import contextlib
import importlib
import importlib.util
import json
import os
import re
import sys
import time
import uuid

import modal
import pytest

from homeport._image_request import build_request
from homeport.exception import ImageBuildError, NotFoundError
from homeport.testing import homeport_cli, running

pytestmark = pytest.mark.integration

HELPER = "VALUE = 'from add_local_python_source'\n"


@pytest.fixture(scope="module")
def images(platform, apps_path, tmp_path_factory):
    # A module the caller can import only while the image is built: the container can import it
    # only if `add_local_python_source` put it there (it is not on the function's sys.path).
    helper_dir = tmp_path_factory.mktemp("helper")
    (helper_dir / "hp_image_helper.py").write_text(HELPER)
    with contextlib.ExitStack() as stack:
        sys.path.insert(0, str(helper_dir))
        try:
            module = stack.enter_context(running("images"))
        finally:
            sys.path.remove(str(helper_dir))
            sys.modules.pop("hp_image_helper", None)
        yield module


def test_a_pinned_package_only_in_its_own_image(images):
    pinned = images.in_pinned.remote()
    plain = images.in_plain.remote()
    assert pinned["tabulate"] == "0.9.0"
    assert plain["tabulate"] is None
    assert importlib.util.find_spec("tabulate") is None  # nor in the caller's environment
    assert pinned["prefix"] != plain["prefix"] != sys.prefix


def test_the_callers_packages_do_not_leak_into_images(images):
    # pytest and psutil are installed where the tests run (the test extra; a Homeport dependency).
    assert importlib.util.find_spec("pytest") is not None and importlib.util.find_spec("psutil") is not None
    for info in (images.in_pinned.remote(), images.in_plain.remote()):
        assert info["pytest"] is False and info["psutil"] is False


LEAK_APP = """
import importlib.util
import sys

import modal

from hp_leak_pkg import helper  # the app's own package: it comes along, like Modal mounts it

app = modal.App("leak")


@app.function()
def seen():
    return {"helper": helper.VALUE, "editable": importlib.util.find_spec("hp_leak_editable") is not None,
            "path": sys.path}
"""


def test_only_the_apps_own_source_reaches_containers(platform, tmp_path, monkeypatch):
    """The caller's other import directories (PYTHONPATH, the `.pth` path of an editable install) stay
    out of containers; the package the app lives in comes along."""
    editable = tmp_path / "editable-src"  # what `pip install -e` of another project adds to sys.path
    (editable / "hp_leak_editable").mkdir(parents=True)
    (editable / "hp_leak_editable" / "__init__.py").write_text("")
    pkg = tmp_path / "project" / "hp_leak_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "helper.py").write_text("VALUE = 'the app package'\n")
    (pkg / "leakapp.py").write_text(LEAK_APP)
    monkeypatch.syspath_prepend(str(editable))
    monkeypatch.syspath_prepend(str(tmp_path / "project"))
    assert importlib.util.find_spec("hp_leak_editable") is not None  # importable here
    mod = importlib.import_module("hp_leak_pkg.leakapp")
    try:
        with mod.app.run(show_logs=False):
            info = mod.seen.remote()
    finally:
        for name in ("hp_leak_pkg", "hp_leak_pkg.helper", "hp_leak_pkg.leakapp", "hp_leak_editable"):
            sys.modules.pop(name, None)
    assert info["helper"] == "the app package"
    assert info["editable"] is False, info["path"]
    assert str(editable) not in info["path"]


def test_image_env_and_imports_block(images):
    assert images.in_pinned.remote()["flavour"] == "pinned"
    assert images.in_plain.remote()["flavour"] == "plain"  # App(image=...) is the default image
    assert "---  ---" in images.table.remote()  # module-level import inside `pinned.imports()`


def test_run_function_workdir_and_local_python_source(images):
    info = images.in_built.remote()
    assert info["marker"] == "written at build time with tabulate 0.9.0"
    assert info["helper"] == "from add_local_python_source"
    assert "/images/mounts/" in info["helper_file"]
    assert info["cwd"] == "/tmp"


def test_local_files_copied_mounted_and_workdir(images):
    info = images.in_files.remote()
    assert info["copied"] is True  # add_local_file(copy=True): built into the image
    assert "images.py" in info["data"] and "images_rootfs.py" not in info["data"]  # add_local_dir, ignore=
    assert not any(name.endswith(".pyc") for name in info["data"])
    assert info["cwd"] == "/hp-workdir"  # a workdir the host does not have exists in the image
    import os

    assert not os.path.exists("/hp-data") and not os.path.exists("/hp-workdir")  # nothing made on the host


def _build(image, **kwargs):
    """Start (and stop) an app whose one function uses `image`: `app.run()` builds what is not cached."""
    app = modal.App()

    @app.function(image=image, serialized=True, **kwargs)
    def f():
        return 1

    with app.run(show_logs=False):
        pass


def _layer_manifests(platform) -> dict[str, int]:
    """Every image layer built so far, with when its manifest was written."""
    return {str(p): p.stat().st_mtime_ns for p in (platform.state_dir / "images" / "layers").glob("*/layer.json")}


def test_a_cached_image_is_resolved_not_built_again(platform):
    # (bench/run.py's image_build figure says how long each takes)
    image = modal.Image.debian_slim().env({"NONCE": str(time.time())}).pip_install("tabulate==0.9.0")
    before = _layer_manifests(platform)
    _build(image)
    built = _layer_manifests(platform)
    assert set(built) - set(before)  # the first run built the image's new layers
    _build(image)
    assert _layer_manifests(platform) == built  # the second built nothing, wrote nothing again


def test_run_function_in_a_plain_image_never_writes_to_the_host(platform):
    """Without a root file system a build step can write to the image's environment and to a private
    /tmp; a write anywhere else fails, saying what to do, instead of landing on the host."""
    target = f"/opt/hp-build-{uuid.uuid4().hex[:8]}"

    def download(path):
        import os
        import sys
        import tempfile

        with tempfile.NamedTemporaryFile(dir="/tmp") as f:  # private, writable, not kept
            f.write(b"scratch")
        with open(os.path.join(sys.prefix, "kept.txt"), "w") as f:  # the image's environment: kept
            f.write("kept")
        os.makedirs(path)

    image = modal.Image.debian_slim().env({"NONCE": target}).run_function(download, args=(target,))
    with pytest.raises(ImageBuildError) as info:
        _build(image)
    message = str(info.value)
    assert "Read-only file system" in message and target in message, message
    assert "root file system" in message and "apt_install(...)" in message
    assert not os.path.exists(target)


def test_a_failing_step_names_itself_and_shows_its_output(platform):
    image = modal.Image.debian_slim().env({"A": "1"}).pip_install("homeport-no-such-package-q8x==1.0")
    with pytest.raises(ImageBuildError) as info:
        _build(image)
    message = str(info.value)
    assert "step 3 of 3, pip_install('homeport-no-such-package-q8x==1.0')" in message
    assert "uv pip install exited with code 1" in message
    assert "Last lines of its output" in message and "homeport-no-such-package-q8x" in message.split("output:")[1]


PYPROJECT = """\
[project]
name = "hp-pyproject-image"
version = "0.1.0"
dependencies = ["six==1.16.0"]

[project.optional-dependencies]
table = ["tabulate==0.8.10"]
"""


def test_uv_requirements_and_pyproject_installs_pin_their_versions(platform, tmp_path):
    """Each installer builds an image with exactly the versions it was given, and only those."""
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("tabulate==0.9.0\n")
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(PYPROJECT)
    base = modal.Image.debian_slim().env({"HP_NONCE": uuid.uuid4().hex})  # built here, not found cached
    app = modal.App()

    def versions():
        from importlib.metadata import PackageNotFoundError, version

        out = {}
        for name in ("six", "tabulate"):
            try:
                out[name] = version(name)
            except PackageNotFoundError:
                out[name] = None
        return out

    @app.function(image=base.uv_pip_install("six==1.17.0"), serialized=True)
    def with_uv():
        return versions()

    @app.function(image=base.pip_install_from_requirements(str(requirements)), serialized=True)
    def with_requirements():
        return versions()

    @app.function(image=base.pip_install_from_pyproject(str(pyproject), optional_dependencies=["table"]),
                  serialized=True)
    def with_pyproject():
        return versions()

    with app.run(show_logs=False):
        assert with_uv.remote() == {"six": "1.17.0", "tabulate": None}
        assert with_requirements.remote() == {"six": None, "tabulate": "0.9.0"}
        assert with_pyproject.remote() == {"six": "1.16.0", "tabulate": "0.8.10"}  # with its optional group


def test_build_output_reaches_the_caller_while_the_step_still_runs(platform):
    """A run_function step prints a line, then waits until the caller's log handler has received it:
    had the output been held back until the step ended, the step would never be released (and fail)."""
    import socket
    import threading

    marker = f"hp-streamed-{uuid.uuid4().hex[:8]}"
    listener = socket.create_server(("127.0.0.1", 0))
    released = threading.Event()

    def release():
        conn, _ = listener.accept()
        with conn:
            released.wait(120)  # a bound on a failure, not a timing: the build fails without the word
            conn.sendall(b"go" if released.is_set() else b"no")

    def step(port, marker):
        import socket

        print(marker, flush=True)
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.settimeout(180)
            if conn.recv(2) != b"go":
                raise RuntimeError("the caller never saw the line printed before this")

    image = modal.Image.debian_slim().env({"HP_NONCE": marker}).run_function(
        step, args=(listener.getsockname()[1], marker))
    releaser = threading.Thread(target=release, daemon=True)
    releaser.start()
    try:
        with _BuildLog(on_line=lambda line: marker in line and released.set()) as log:
            _build(image)
    finally:
        released.set()
        listener.close()
        releaser.join(10)
    seen = [i for i, line in enumerate(log.lines) if marker in line]
    done = [i for i, line in enumerate(log.lines) if line.startswith("Built image")]
    assert seen and done and seen[0] < done[0], log.lines  # and in order: before the build finished


def _builder(tmp_path, **kwargs):
    from homeport.image_builder import ImageBuilder

    return ImageBuilder(tmp_path / "images", **kwargs)


def test_steps_this_machine_cannot_build_say_what_is_missing(tmp_path):
    """Without a Debian base (no debootstrap, not root, no namespaces) apt_install and run_commands
    fail at build time saying what is missing, as UnimplementedError in the client."""
    from homeport.image_builder import ImageUnsupported
    from homeport.image_builder.rootfs import RootfsUnavailable

    class NoDebian:
        name = "none"
        ready = False

        async def ensure(self, run, out):
            raise RootfsUnavailable("`debootstrap` is not installed: install it (`apt-get install debootstrap`)")

    builder = _builder(tmp_path, debian=NoDebian(), run_container=lambda *a: None)
    for image, label in [(modal.Image.debian_slim().apt_install("git"), "apt_install('git')"),
                         (modal.Image.debian_slim().run_commands("echo hi"), "run_commands('echo hi')")]:
        with pytest.raises(ImageUnsupported, match=rf"step 2 of 2, {re.escape(label)}.*apt-get install debootstrap"):
            asyncio.run(builder.build(build_request(image)))
    assert ImageUnsupported.code == "unimplemented"  # UnimplementedError in the client


def test_a_python_version_not_on_this_machine_names_the_available_ones(platform):
    with pytest.raises(ImageBuildError, match=r"No Python 3\.99 interpreter on this machine.*Available here: .*3\.\d+"):
        _build(modal.Image.debian_slim(python_version="3.99"))


def test_a_root_file_system_image_is_offered_only_interpreters_it_can_use(tmp_path):
    """The system's Python cannot be carried into an image's own root file system: an image with
    apt_install is neither given it nor told it is available."""
    from homeport.image_builder import ImageBuildFailed
    from homeport.image_builder.interpreters import Interpreter

    builder = _builder(tmp_path)
    builder.interpreters._found = [Interpreter("/usr/bin/python3.77", (3, 77, 2)),  # as if probed
                                   Interpreter("/opt/hp-fake/py3.78/bin/python3.78", (3, 78, 1))]
    plain = asyncio.run(builder.plan(build_request(modal.Image.debian_slim(python_version="3.77"))))
    assert plain.steps[0]["interpreter"]["path"] == "/usr/bin/python3.77"
    with pytest.raises(ImageBuildFailed) as info:
        asyncio.run(builder.plan(build_request(modal.Image.debian_slim(python_version="3.77").apt_install("git"))))
    message = str(info.value)
    assert "No Python 3.77 interpreter on this machine that images with apt_install or run_commands can use" in message
    assert "Available here for images with apt_install or run_commands: 3.78.1." in message


def test_a_later_images_bad_python_version_fails_before_any_image_is_built(platform):
    nonce = uuid.uuid4().hex
    good = modal.Image.debian_slim().env({"HP_NONCE": nonce})
    app = modal.App()

    @app.function(image=good, serialized=True)
    def first():
        return 1

    @app.function(image=modal.Image.debian_slim(python_version="3.99"), serialized=True)
    def second():
        return 2

    with pytest.raises(ImageBuildError, match=r"No Python 3\.99 interpreter"):
        with app.run(show_logs=False):
            pass
    # Had the first image been built before the second was looked at, this would find it cached.
    with _BuildLog() as log:
        _build(good)
    assert any(line.startswith("Building image") for line in log.lines), log.lines


class _BuildLog:
    """The image build log lines the control plane streams to this client, in the order they came."""

    def __init__(self, on_line=None):
        self.on_line = on_line

    def __enter__(self):
        from homeport._bridge import run_sync
        from homeport._client import get_client

        self.client = run_sync(get_client())
        self.saved = self.client.log_handler
        self.lines = []
        self.client.log_handler = self.on_log
        return self

    def on_log(self, msg):
        if msg.get("fn") == "image":
            self.lines.append(msg["data"])
            if self.on_line is not None:
                self.on_line(msg["data"])

    def __exit__(self, *exc):
        self.client.log_handler = self.saved


def test_a_missing_named_secret_of_a_build_step_fails_before_building(platform):
    image = modal.Image.debian_slim().pip_install("six", secrets=[modal.Secret.from_name("hp-no-such-secret")])
    with pytest.raises(NotFoundError, match="hp-no-such-secret"):
        _build(image)


def test_another_python_version(platform, apps_path, monkeypatch):
    from homeport.image_builder.interpreters import MIN_VERSION, Interpreters

    running = sys.version_info[:2]
    others = [i for i in Interpreters().all() if i.version[:2] != running and i.version[:2] >= MIN_VERSION]
    if not others:
        pytest.skip("no other Python (3.10 or newer) on this machine")
    wanted = ".".join(map(str, others[0].version[:2]))
    monkeypatch.setenv("HP_TEST_OTHER_PYTHON", wanted)
    sys.modules.pop("images_python", None)
    mod = importlib.import_module("images_python")
    with mod.app.run(show_logs=False):
        assert ".".join(map(str, mod.version.remote()[:2])) == wanted


# --- images with their own Debian root file system ------------------------------------------------------------


def _rootfs_missing():
    from homeport.image_builder.rootfs import DebianBase, missing

    return None if DebianBase().ready and missing() is None else missing()


@pytest.mark.timeout(900)  # the first run on a machine makes the Debian base (about 30 s, from Debian's mirror)
@pytest.mark.skipif(_rootfs_missing() is not None, reason=f"no root file system images here: {_rootfs_missing()}")
def test_apt_install_run_commands_and_run_function_take_effect(platform, apps_path):
    import images_rootfs

    with images_rootfs.app.run(show_logs=False):
        info = images_rootfs.inspect.remote()
    with images_rootfs.app.run(show_logs=False):  # a new container, forked from the same template
        again = images_rootfs.inspect.remote()
        timelines = [r["timeline"] for r in json.loads(homeport_cli("container", "list", "--json").stdout)
                     if r["function"] == "inspect"]
    assert again["pid"] != info["pid"] and again["earlier_write"] is False  # each container has its own root
    assert timelines and all("fork" in t for t in timelines)  # started from the image's warm template
    assert info["tree"] == "/usr/bin/tree" and info["tree_version"].startswith("tree v")
    assert info["marker"] == "built by run_commands"
    assert info["weights"] == "weights from run_function"  # written outside the venv, kept in the image
    assert info["cwd"] == "/srv/app" and info["source"] is True  # workdir; add_local_file at container start
    assert info["debian"]
    import os

    assert not os.path.exists("/etc/hp-scratch-write")  # the container's writes stayed in its own root
