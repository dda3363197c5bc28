"""Secrets: named secrets, encrypted at rest, injected only where requested."""

import json
import os
import sqlite3
import sys
import textwrap

import pytest

from homeport.exception import InvalidError, NotFoundError
from homeport.testing import homeport_cli

pytestmark = pytest.mark.integration


def _app(tmp_path, name, body):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    sys.path.insert(0, str(tmp_path))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(tmp_path))


def test_secret_cli_and_injection_only_where_requested(platform, tmp_path):
    dotenv = tmp_path / "creds.env"
    dotenv.write_text("DB_USER=admin\n")
    out = homeport_cli("secret", "create", "db-creds", "DB_PASSWORD=hunter2-very-secret", "--from-dotenv", str(dotenv))
    assert out.returncode == 0, out.stderr
    out = homeport_cli("secret", "create", "db-creds", "X=1")
    assert out.returncode != 0 and "--force" in out.stderr  # no silent overwrite
    rows = json.loads(homeport_cli("secret", "list", "--json").stdout)
    assert {"name": "db-creds", "keys": ["DB_PASSWORD", "DB_USER"]}.items() <= next(r for r in rows if r["name"] == "db-creds").items()
    assert "hunter2" not in homeport_cli("secret", "list").stdout

    mod = _app(tmp_path, "secret_app", """
        import os
        import modal
        app = modal.App("secret-app")

        @app.function(secrets=[modal.Secret.from_name("db-creds", required_keys=["DB_PASSWORD"])])
        def with_secret():
            return os.environ.get("DB_PASSWORD"), os.environ.get("DB_USER")

        @app.function()
        def without_secret():
            return os.environ.get("DB_PASSWORD")
    """)
    with mod.app.run(show_logs=False):
        assert mod.with_secret.remote() == ("hunter2-very-secret", "admin")
        assert mod.without_secret.remote() is None
        listing = homeport_cli("container", "list", "--json").stdout
    assert "hunter2" not in listing
    # encrypted at rest: not in the database, the logs, or anywhere in clear under the state directory
    for path in platform.state_dir.rglob("*"):
        if path.is_file() and path.suffix not in (".sock",):
            assert b"hunter2-very-secret" not in path.read_bytes(), path
    key = platform.state_dir / "secret.key"
    assert key.stat().st_mode & 0o077 == 0
    db = sqlite3.connect(platform.state_dir / "state.db")
    assert db.execute("SELECT COUNT(*) FROM secrets WHERE name = 'db-creds'").fetchone() == (1,)
    db.close()

    out = homeport_cli("secret", "delete", "db-creds")
    assert out.returncode == 0, out.stderr
    assert "db-creds" not in homeport_cli("secret", "list").stdout


def test_missing_secret_or_key_fails_before_any_container_starts(platform, tmp_path):
    homeport_cli("secret", "create", "partial", "A=1", "--force")
    mod = _app(tmp_path, "missing_secret_app", """
        import modal
        app = modal.App("missing-secret")
        other = modal.App("missing-key")

        @app.function(secrets=[modal.Secret.from_name("does-not-exist")])
        def f():
            return 1

        @other.function(secrets=[modal.Secret.from_name("partial", required_keys=["A", "B"])])
        def g():
            return 1
    """)
    with pytest.raises(NotFoundError, match="Secret 'does-not-exist' not found"):
        with mod.app.run(show_logs=False):
            pass
    with pytest.raises(NotFoundError, match="missing the required key\\(s\\) 'B'"):
        with mod.other.run(show_logs=False):
            pass
    from homeport import _protocol as P
    from homeport._bridge import run_sync
    from homeport._client import get_client

    async def ls():
        return await (await get_client()).request({"t": P.CONTAINER_LIST})

    assert not [c for c in run_sync(ls()) if c["function"] in ("f", "g")]


def test_invalid_secret_names_are_refused(platform):
    out = homeport_cli("secret", "create", "bad name!", "A=1")
    assert out.returncode != 0
    with pytest.raises(InvalidError):
        from homeport import Secret

        Secret.from_name("bad name!")
    assert os.environ.get("DB_PASSWORD") is None


def test_the_control_planes_own_environment_stays_out_of_containers(tmp_path, monkeypatch):
    """What the shell that started the control plane exported (a cloud key, a PYTHONPATH) is not a
    secret of any function: a container sees only the basics (PATH, HOME, locale ...) of it."""
    from homeport.testing import Platform

    monkeypatch.setenv("HP_TEST_SHELL_CREDENTIAL", "exported-in-the-shell")
    monkeypatch.setenv("LC_HP_TEST", "a locale setting")
    mod = _app(tmp_path, "shell_env_app", """
        import os
        import modal
        app = modal.App("shell-env")

        @app.function(env={"GIVEN": "by env="})
        def environment():
            return dict(os.environ)
    """)
    with Platform(str(tmp_path / "p")):  # started with the variables above in its environment
        monkeypatch.delenv("HP_TEST_SHELL_CREDENTIAL")
        with mod.app.run(show_logs=False):
            env = mod.environment.remote()
    assert "HP_TEST_SHELL_CREDENTIAL" not in env
    assert env["LC_HP_TEST"] == "a locale setting" and env["GIVEN"] == "by env="
    assert env["HOME"] == os.environ["HOME"] and "PATH" in env
    assert not [k for k in env if k.startswith("PYTEST_")]  # nor what pytest set for itself
