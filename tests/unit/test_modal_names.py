"""Every public name of Modal 1.6's `modal.__all__` exists under `import modal`; what Homeport does not
build raises `UnimplementedError` naming it when used, never `AttributeError`."""

import subprocess
import sys

import pytest

import homeport
from homeport.exception import InvalidError, UnimplementedError

# modal 1.6.4 `modal/__init__.py` (../shared/reference/modal-api.md §1.1)
MODAL_ALL = [
    "App", "Function", "FunctionCall", "Cls", "parameter", "Server", "Image", "Secret", "Volume", "Dict", "Queue",
    "NetworkFileSystem", "CloudBucketMount", "Proxy", "Sandbox", "SandboxSnapshot", "Probe", "Cron", "Period",
    "Retries", "SchedulerPlacement", "Cluster", "Environment", "Workspace", "Client", "Tunnel", "forward",
    "method", "enter", "exit", "fastapi_endpoint", "web_endpoint", "asgi_app", "wsgi_app", "web_server",
    "batched", "concurrent", "clustered", "sessioned", "current_input_id", "current_function_call_id",
    "is_local", "interact", "enable_output", "FilePatternMatcher", "Error", "billing", "experimental", "types",
]


@pytest.mark.parametrize("name", MODAL_ALL)
def test_every_modal_name_exists(name):
    assert hasattr(homeport, name), name
    assert name in homeport.__all__, name


def test_star_import_gives_every_name():
    ns: dict = {}
    exec("from homeport import *", ns)
    assert set(MODAL_ALL) <= set(ns)


@pytest.mark.parametrize("name", homeport._placeholders.NOT_BUILT)
def test_placeholders_raise_unimplemented_when_used(name):
    obj = getattr(homeport, name)
    if getattr(obj, "_modal_name", None) is None:
        pytest.skip(f"modal.{name} is built")
    with pytest.raises(UnimplementedError, match=f"modal.{name}"):
        obj()
    with pytest.raises(UnimplementedError, match=f"modal.{name}.from_name"):
        obj.from_name("x")
    assert not hasattr(obj, "__wrapped__")  # introspection still sees an ordinary class


def test_forward_outside_a_container_is_invalid():
    with pytest.raises(InvalidError, match="inside a Modal container"):
        with homeport.forward(8000):
            pass


def test_import_modal_in_a_fresh_interpreter(tmp_path):
    """The .pth hook installed with Homeport: `import modal` in any process, public submodule paths too."""
    code = (
        "import modal, modal.exception, modal.functions, modal.app, modal.cls, modal.image, modal.volume, "
        "modal.secret, modal.partial_function, modal.retries, modal.schedule\n"
        "from modal.exception import UnimplementedError\n"
        "import homeport\n"
        "assert modal is homeport and modal.exception is homeport.exception\n"
        "assert modal.functions.Function is homeport.Function and modal.app.App is homeport.App\n"
        "print('ok', modal.is_local())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env=_env())
    assert out.returncode == 0 and out.stdout.strip() == "ok True", out.stderr


def _env(**extra):
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("HOMEPORT_MODAL", "HOMEPORT_MODAL_ALIAS", "PYTHONPATH")}
    env.update(extra)
    return env


def _fake_modal_client(tmp_path):
    """A stand-in for Modal's own client (a `modal` package on sys.path)."""
    pkg = tmp_path / "site" / "modal"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("REAL_MODAL = True\n")
    (pkg / "__main__.py").write_text("import sys\nprint('real modal cli', sys.argv[1:])\n")
    return str(tmp_path / "site")


def test_modal_own_client_is_never_shadowed_unless_chosen(tmp_path):
    site = _fake_modal_client(tmp_path)
    probe = "import modal; print(getattr(modal, 'REAL_MODAL', False), modal.__name__)"
    auto = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env=_env(PYTHONPATH=site))
    assert auto.stdout.strip() == "True modal", auto.stderr
    chosen = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env=_env(PYTHONPATH=site, HOMEPORT_MODAL="1"))
    assert chosen.stdout.strip() == "False homeport", chosen.stderr
    off = subprocess.run([sys.executable, "-c", "import modal"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60, env=_env(HOMEPORT_MODAL="0"))
    assert off.returncode != 0 and "No module named 'modal'" in off.stderr


def test_modal_command_hands_over_to_modal_own_client(tmp_path):
    site = _fake_modal_client(tmp_path)
    cmd = [sys.executable, "-m", "homeport.cli._modal", "app", "list"]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60, env=_env(PYTHONPATH=site))
    assert out.stdout.strip() == "real modal cli ['app', 'list']", out.stderr
    out = subprocess.run([*cmd[:3], "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env=_env(PYTHONPATH=site, HOMEPORT_MODAL="1"))
    assert out.returncode == 0 and "served by Homeport" in out.stdout, out.stderr
