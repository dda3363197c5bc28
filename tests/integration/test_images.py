"""Issue 5, images end to end: each function sees its image's packages and nothing of the caller's.

Builds are cached in the session's state directory and packages come from uv's shared cache, so the
images here are built once per session (about a second in all once uv's cache has the wheels).
"""

import importlib
import importlib.util
import sys
import time

import pytest

import homeport as modal
from homeport.exception import ImageBuildError, NotFoundError, UnimplementedError

pytestmark = pytest.mark.integration

HELPER = "VALUE = 'from add_local_python_source'\n"


@pytest.fixture(scope="module")
def images(platform, apps_path, tmp_path_factory):
    import images

    # A module the caller can import only while the image is built: the container can import it
    # only if `add_local_python_source` put it there (it is not on the function's sys.path).
    helper_dir = tmp_path_factory.mktemp("helper")
    (helper_dir / "hp_image_helper.py").write_text(HELPER)
    sys.path.insert(0, str(helper_dir))
    try:
        run = images.app.run(show_logs=False)
        run.__enter__()
    finally:
        sys.path.remove(str(helper_dir))
        sys.modules.pop("hp_image_helper", None)
    try:
        yield images
    finally:
        run.__exit__(None, None, None)


def test_a_pinned_package_only_in_its_own_image(images):
    pinned = images.in_pinned.remote()
    plain = images.in_plain.remote()
    assert pinned["tabulate"] == "0.9.0"
    assert plain["tabulate"] is None
    assert importlib.util.find_spec("tabulate") is None  # nor in the caller's environment
    assert pinned["prefix"] != plain["prefix"] != sys.prefix


def test_the_callers_packages_do_not_leak_into_images(images):
    # six and psutil are installed where the tests run (psutil is a Homeport dependency).
    assert importlib.util.find_spec("six") is not None and importlib.util.find_spec("psutil") is not None
    for info in (images.in_pinned.remote(), images.in_plain.remote()):
        assert info["six"] is False and info["psutil"] is False


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


def _build(image, **kwargs):
    """Run an app whose one function uses `image`; return the seconds `app.run()` took to start."""
    app = modal.App()

    @app.function(image=image, serialized=True, **kwargs)
    def f():
        return 1

    t = time.perf_counter()
    with app.run(show_logs=False):
        return time.perf_counter() - t


def test_cached_image_resolves_fast(platform):
    image = modal.Image.debian_slim().env({"NONCE": str(time.time())}).pip_install("tabulate==0.9.0")
    first = _build(image)
    again = _build(image)
    print(f"\nimage with one small pip package: first build {first * 1e3:.0f} ms, cached {again * 1e3:.1f} ms")
    assert again < first


def test_a_failing_step_names_itself_and_shows_its_output(platform):
    image = modal.Image.debian_slim().env({"A": "1"}).pip_install("homeport-no-such-package-q8x==1.0")
    with pytest.raises(ImageBuildError) as info:
        _build(image)
    message = str(info.value)
    assert "step 3 of 3, pip_install('homeport-no-such-package-q8x==1.0')" in message
    assert "uv pip install exited with code 1" in message
    assert "Last lines of its output" in message and "homeport-no-such-package-q8x" in message.split("output:")[1]


def test_steps_this_machine_cannot_build_say_what_is_missing(platform):
    with pytest.raises(UnimplementedError, match=r"step 2 of 2, apt_install\('git'\).*debootstrap"):
        _build(modal.Image.debian_slim().apt_install("git"))
    with pytest.raises(UnimplementedError, match=r"run_commands\('echo hi'\).*bubblewrap"):
        _build(modal.Image.debian_slim().run_commands("echo hi"))


def test_a_python_version_not_on_this_machine_names_the_available_ones(platform):
    with pytest.raises(ImageBuildError, match=r"No Python 3\.99 interpreter on this machine.*Available here: .*3\.\d+"):
        _build(modal.Image.debian_slim(python_version="3.99"))


def test_a_missing_named_secret_of_a_build_step_fails_before_building(platform):
    image = modal.Image.debian_slim().pip_install("six", secrets=[modal.Secret.from_name("hp-no-such-secret")])
    with pytest.raises(NotFoundError, match="hp-no-such-secret"):
        _build(image)


def test_another_python_version(platform, apps_path, monkeypatch):
    from homeport.server.interpreters import MIN_VERSION, Interpreters

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
