"""What the SDK resolves locally before an image is built (files, modules, functions, secrets)."""

import os
import sys

import cloudpickle
import pytest

from homeport._image import Image
from homeport._image_request import build_request, code_dirs, import_root
from homeport._secret import Secret
from homeport.exception import InvalidError, UnimplementedError


def _tree(root, files):
    for rel in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)


def _targets(step):
    return sorted(t for t, _ in step["files"])


def test_add_local_dir_lists_files_minus_ignored(tmp_path):
    _tree(tmp_path, ["a.py", "b.pyc", "sub/c.py", "sub/d.pyc", "node_modules/x.js", "keep/.venv/y"])
    step = build_request(
        Image.debian_slim().add_local_dir(tmp_path, "/app", ignore=["*.pyc", "**/*.pyc", "node_modules", "**/.venv"])
    )["steps"][1]
    assert _targets(step) == ["/app/a.py", "/app/sub/c.py"]
    assert "/app/keep" in step["dirs"] and "/app/node_modules" not in step["dirs"]
    assert dict(step["files"])["/app/a.py"] == str(tmp_path / "a.py")
    assert "ignore" not in step and step["copy"] is False


def test_add_local_dir_negated_patterns_and_predicates(tmp_path):
    _tree(tmp_path, ["a.txt", "b.txt", "c.md"])
    step = build_request(Image.debian_slim().add_local_dir(tmp_path, "/d", ignore=["*.txt", "!b.txt"]))["steps"][1]
    assert _targets(step) == ["/d/b.txt", "/d/c.md"]
    step = build_request(Image.debian_slim().add_local_dir(tmp_path, "/d", ignore=lambda p: p.suffix == ".md"))["steps"][1]
    assert _targets(step) == ["/d/a.txt", "/d/b.txt"]


def test_add_local_file_and_missing_paths(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    step = build_request(Image.debian_slim().add_local_file(tmp_path / "a.txt", "/data/"))["steps"][1]
    assert step["files"] == [["/data/a.txt", str(tmp_path / "a.txt")]]
    with pytest.raises(InvalidError, match="is not a file"):
        build_request(Image.debian_slim().add_local_file(tmp_path / "nope.txt", "/x"))
    with pytest.raises(InvalidError, match="is not a directory"):
        build_request(Image.debian_slim().add_local_dir(tmp_path / "nope", "/x"))


def test_add_local_python_source_keeps_only_python_files(tmp_path, monkeypatch):
    _tree(tmp_path, ["hp_pkg_x/__init__.py", "hp_pkg_x/core.py", "hp_pkg_x/data.json", "hp_pkg_x/sub/m.py",
                     "hp_pkg_x/__pycache__/core.cpython.pyc", "hp_mod_x.py"])
    monkeypatch.syspath_prepend(str(tmp_path))
    step = build_request(Image.debian_slim().add_local_python_source("hp_pkg_x", "hp_mod_x"))["steps"][1]
    assert _targets(step) == [
        "/root/hp_mod_x.py", "/root/hp_pkg_x/__init__.py", "/root/hp_pkg_x/core.py", "/root/hp_pkg_x/sub/m.py",
    ]
    assert step["python_root"] == "/root"
    with pytest.raises(InvalidError, match="no module 'hp_missing_module_x'"):
        build_request(Image.debian_slim().add_local_python_source("hp_missing_module_x"))


def _build_step(x=1):
    return x


def test_run_function_is_found_by_reference_with_pickled_arguments():
    step = build_request(Image.debian_slim().run_function(_build_step, args=(2,), kwargs={"y": 3}))["steps"][1]
    fn = step["function"]
    assert fn["module_name"] == __name__ and fn["qualname"] == "_build_step"
    assert fn["_module_file"] == os.path.abspath(__file__)
    assert fn["_serialized"] is None and "def _build_step" in fn["source"]
    assert cloudpickle.loads(step["args"]) == ((2,), {"y": 3})


def test_secrets_travel_as_values_outside_the_hash():
    step = build_request(
        Image.debian_slim().pip_install("x", secrets=[Secret.from_dict({"TOKEN": "s3cr3t-value"}), Secret.from_name("stored")])
    )["steps"][1]
    assert step["_secret_env"] == {"TOKEN": "s3cr3t-value"}
    assert step["secret_refs"] == [{"name": "stored", "required_keys": []}]
    assert "s3cr3t-value" not in str(step["secrets"])


def test_build_steps_with_volumes_are_refused():
    from homeport._volume import Volume

    with pytest.raises(UnimplementedError, match="cannot mount volumes"):
        build_request(Image.debian_slim().run_commands("ls", volumes={"/v": Volume.from_name("v")}))


def test_code_dirs_are_the_modules_import_root_and_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "pkg")
    other = tmp_path / "on-pythonpath"  # PYTHONPATH, or a `.pth` path of an editable install
    other.mkdir()
    monkeypatch.syspath_prepend(str(other))
    dirs = code_dirs("pkg.sub.app", str(tmp_path / "pkg" / "sub" / "app.py"))
    assert dirs == [str(tmp_path), str(tmp_path / "pkg")]  # where `pkg` is imported from, then the cwd
    assert str(other) not in dirs
    assert code_dirs("app", str(tmp_path / "app.py"))[0] == str(tmp_path)
    assert code_dirs("__main__", str(tmp_path / "pkg" / "script.py"))[0] == str(tmp_path / "pkg")


def test_import_root_of_packages_and_of_files_loaded_under_another_name(tmp_path):
    assert import_root("pkg.sub", str(tmp_path / "pkg" / "sub" / "__init__.py")) == str(tmp_path)
    assert import_root("pkg.sub.mod", str(tmp_path / "pkg" / "sub" / "mod.py")) == str(tmp_path)
    # A file imported under a name its directories do not spell: its own directory.
    assert import_root("renamed.mod", str(tmp_path / "dir" / "mod.py")) == str(tmp_path / "dir")


def test_code_dirs_never_name_installed_packages(monkeypatch):
    site_dir = next(p for p in sys.path if p.endswith("site-packages"))
    dirs = code_dirs("somepkg.mod", os.path.join(site_dir, "somepkg", "mod.py"))
    assert site_dir not in dirs and not any("site-packages" in d for d in dirs)
    monkeypatch.chdir(sys.base_prefix)
    assert code_dirs(None, None) == []  # not even as the working directory


def test_imports_is_lenient_in_containers_of_other_images(monkeypatch):
    image = Image.debian_slim().pip_install("hp-not-installed")
    monkeypatch.setenv("HOMEPORT_IS_REMOTE", "1")
    monkeypatch.setenv("HOMEPORT_IMAGE_HASH", "another image")
    with image.imports():
        import hp_not_installed_module
    monkeypatch.setenv("HOMEPORT_IMAGE_HASH", image.content_hash())
    with pytest.raises(ImportError), image.imports():
        import hp_not_installed_module  # noqa: F401
