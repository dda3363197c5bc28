"""Volumes: persistent directories mounted at the paths the user gives."""

import shutil
import sys
import textwrap

import modal
import pytest

from homeport.exception import NotFoundError
from homeport.testing import Platform, homeport_cli

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="volumes need bubblewrap (apt-get install bubblewrap)"),
]

APP = textwrap.dedent("""
    import os
    import modal

    app = modal.App("volumes-{suffix}")
    vol = modal.Volume.from_name("{volume}", create_if_missing=True)

    @app.function(volumes={{"/data": vol}})
    def write(name, text):
        os.makedirs("/data/out", exist_ok=True)
        with open(f"/data/out/{{name}}", "w") as f:
            f.write(text)
        vol.commit()
        return os.path.exists("/data")

    @app.function(volumes={{"/cache/models": vol}})
    def read(name):
        vol.reload()
        with open(f"/cache/models/out/{{name}}") as f:
            return f.read()

    @app.function()
    def has_data_dir():
        return os.path.exists("/data/out")
""")


def _load(tmp_path, name, **fmt):
    (tmp_path / f"{name}.py").write_text(APP.format(**fmt))
    sys.path.insert(0, str(tmp_path))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(tmp_path))


def test_written_committed_and_read_by_another_function_after_a_restart(tmp_path):
    with Platform(str(tmp_path / "p")) as p:
        mod = _load(tmp_path, "volapp1", suffix="a", volume="shared")
        with mod.app.run(show_logs=False):
            assert mod.write.remote("a.txt", "hello from a") is True
            assert mod.read.remote("a.txt") == "hello from a"  # mounted at another path in another function
            assert mod.has_data_dir.remote() is False  # only where it is mounted; nothing on the host's /data
        p.restart()
        with mod.app.run(show_logs=False):
            assert mod.read.remote("a.txt") == "hello from a"  # persisted across apps and restarts
        vol = modal.Volume.from_name("shared")
        assert b"".join(vol.read_file("out/a.txt")) == b"hello from a"
        assert [e.path for e in vol.listdir("/out")] == ["out/a.txt"]


def test_parallel_writers_do_not_corrupt_each_other(platform, tmp_path):
    mod = _load(tmp_path, "volapp2", suffix="b", volume="parallel")
    with mod.app.run(show_logs=False):
        names = [f"f{i}.txt" for i in range(8)]
        list(mod.write.starmap((n, n * 500) for n in names))
        assert list(mod.read.map(names)) == [n * 500 for n in names]


def test_client_operations_and_cli(platform, tmp_path):
    local = tmp_path / "local"
    (local / "sub").mkdir(parents=True)
    (local / "x.txt").write_text("x")
    (local / "sub" / "y.txt").write_text("y")
    out = homeport_cli("volume", "create", "clivol")
    assert out.returncode == 0, out.stderr
    assert homeport_cli("volume", "put", "clivol", str(local), "/up").returncode == 0
    assert "up/sub/y.txt" in homeport_cli("volume", "ls", "clivol", "/", "-r").stdout
    assert homeport_cli("volume", "get", "clivol", "/up/x.txt", "-").stdout == "x"
    assert "clivol" in homeport_cli("volume", "list").stdout
    vol = modal.Volume.from_name("clivol")
    vol.copy_files(["/up/x.txt"], "/copies/")
    assert b"".join(vol.read_file("/copies/x.txt")) == b"x"
    with vol.batch_upload() as batch:
        batch.put_file(local / "x.txt", "/batch/one.txt")
    vol.remove_file("/up", recursive=True)
    assert sorted(e.path for e in vol.listdir("/")) == ["batch", "copies"]
    assert homeport_cli("volume", "rm", "clivol", "/batch/one.txt").returncode == 0
    assert homeport_cli("volume", "delete", "clivol", "-y").returncode == 0
    with pytest.raises(NotFoundError):
        modal.Volume.from_name("clivol").listdir("/")


def test_ephemeral_volume_lives_as_long_as_its_block(platform, tmp_path):
    src = tmp_path / "ephvol.py"
    src.write_text(textwrap.dedent("""
        import modal
        app = modal.App("ephvol")

        def run():
            with modal.Volume.ephemeral() as vol:
                @app.function(volumes={"/scratch": vol}, serialized=True)
                def touch():
                    open("/scratch/t", "w").write("t")
                    return "ok"

                with app.run(show_logs=False):
                    result = touch.remote()
                return result, [e.path for e in vol.listdir("/")], vol
    """))
    sys.path.insert(0, str(tmp_path))
    try:
        import ephvol
    finally:
        sys.path.remove(str(tmp_path))
    result, files, vol = ephvol.run()
    assert result == "ok" and files == ["t"]
    assert vol.name is None  # deleted with its block


def test_missing_volume_fails_before_any_container_starts(platform, tmp_path):
    src = tmp_path / "missvol.py"
    src.write_text("import modal\napp = modal.App('missvol')\n\n"
                   "@app.function(volumes={'/d': modal.Volume.from_name('no-such-volume')})\ndef f():\n    return 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import missvol
    finally:
        sys.path.remove(str(tmp_path))
    with pytest.raises(NotFoundError, match="Volume 'no-such-volume' not found"):
        with missvol.app.run(show_logs=False):
            pass


def test_a_volume_made_again_under_its_name_is_what_new_containers_see(platform, tmp_path):
    """Containers fork from a template that has the volume mounted; a volume deleted and created again
    is another directory, and a new container must see that one, not the old one the template holds."""
    mod = _load(tmp_path, "volapp3", suffix="c", volume="remade")
    with mod.app.run(show_logs=False):
        assert mod.write.remote("v.txt", "first") is True
        assert mod.read.remote("v.txt") == "first"
    assert homeport_cli("volume", "delete", "remade", "-y").returncode == 0
    (tmp_path / "v.txt").write_text("second")
    assert homeport_cli("volume", "create", "remade").returncode == 0
    assert homeport_cli("volume", "put", "remade", str(tmp_path / "v.txt"), "/out/v.txt").returncode == 0
    with mod.app.run(show_logs=False):
        assert mod.read.remote("v.txt") == "second"
