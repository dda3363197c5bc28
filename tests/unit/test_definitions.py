"""Definition objects and the validation of `@app.function(...)` options: pure data, no server."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import warnings
from pathlib import PurePosixPath

import msgpack
import pytest

from homeport._image import Image, ImageStep
from homeport._options import (
    GPU_TYPES,
    FunctionOptions,
    function_options,
    merged_env,
    parse_gpu_config,
    unsupported_features,
)
from homeport._retries import Retries
from homeport._schedule import Cron, Period, schedule_from_dict
from homeport._secret import Secret, check_object_name, parse_dotenv
from homeport._volume import Volume
from homeport.exception import DeprecationError, InvalidError, UnimplementedError

RUNNING_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
OTHER_PYTHON = "3.10" if RUNNING_PYTHON != "3.10" else "3.12"


def opts(**kwargs):
    return function_options(tag="f", **kwargs)


# --- Retries --------------------------------------------------------------------------------------


def test_retries_defaults_and_dict_round_trip():
    r = Retries(max_retries=3)
    assert (r.max_retries, r.backoff_coefficient, r.initial_delay, r.max_delay) == (3, 2.0, 1.0, 60.0)
    data = r.to_dict()
    assert msgpack.unpackb(msgpack.packb(data)) == data
    assert Retries.from_dict(data) == r
    assert Retries(max_retries=3, max_delay=30) != r
    assert r != 3
    assert repr(r) == "Retries(max_retries=3, backoff_coefficient=2.0, initial_delay=1.0, max_delay=60.0)"
    assert hash(Retries(max_retries=3)) == hash(r)


def test_retries_zero_is_allowed():
    assert Retries(max_retries=0).max_retries == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_retries": -1}, "Invalid retries number: -1. Function retries must be non-negative."),
        (
            {"max_retries": 1, "max_delay": 0.5},
            "Invalid max_delay: 0.5. max_delay must be at least 1 second.",
        ),
        (
            {"max_retries": 1, "max_delay": 61},
            "Invalid max_delay argument: 61. Must be between 1-60 seconds.",
        ),
        (
            {"max_retries": 1, "initial_delay": -1},
            "Invalid initial_delay argument: -1. Delay must be positive.",
        ),
        (
            {"max_retries": 1, "initial_delay": 61},
            "Invalid initial_delay argument: 61. Must be between 0-60 seconds.",
        ),
        (
            {"max_retries": 1, "backoff_coefficient": 0.5},
            "Invalid backoff_coefficient: 0.5. Coefficient must be between 1.0 (fixed-interval backoff) and 10.0",
        ),
        (
            {"max_retries": 1, "backoff_coefficient": 10.5},
            "Invalid backoff_coefficient: 10.5. Coefficient must be between 1.0 (fixed-interval backoff) and 10.0",
        ),
    ],
)
def test_retries_validation_messages(kwargs, message):
    with pytest.raises(InvalidError, match=f"^{re.escape(message)}$"):
        Retries(**kwargs)


@pytest.mark.parametrize("bad", ["3", 2.5, True, None])
def test_retries_max_retries_must_be_int(bad):
    with pytest.raises(InvalidError, match="`max_retries` must be an int"):
        Retries(max_retries=bad)


def test_retries_delay_must_be_a_number():
    with pytest.raises(InvalidError, match="`initial_delay` must be a number, not str"):
        Retries(max_retries=1, initial_delay="1")


def test_retries_delay_for_attempt_exponential_and_capped():
    r = Retries(max_retries=10, backoff_coefficient=2.0, initial_delay=1.0, max_delay=10.0)
    assert [r.delay_for_attempt(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert r.delay_for_attempt(100_000) == 10.0


def test_retries_delay_for_attempt_fixed_interval():
    r = Retries(max_retries=3, backoff_coefficient=1.0, initial_delay=3.0)
    assert [r.delay_for_attempt(n) for n in (1, 2, 3)] == [3.0, 3.0, 3.0]


def test_retries_delay_for_attempt_starts_at_one():
    with pytest.raises(ValueError, match="attempt starts at 1"):
        Retries(max_retries=1).delay_for_attempt(0)


@pytest.mark.parametrize("policy", [
    Retries(max_retries=5, backoff_coefficient=2.0, initial_delay=0.2),
    Retries(max_retries=5, backoff_coefficient=3.0, initial_delay=1.0, max_delay=10.0),
    Retries(max_retries=5, backoff_coefficient=1.0, initial_delay=0.0),
])
def test_the_control_plane_waits_what_the_policy_says(policy):
    """One formula: the control plane computes retry delays from the policy's wire form with the same
    function `Retries.delay_for_attempt` uses."""
    from homeport._backoff import retry_delay

    assert [retry_delay(policy.to_dict(), n) for n in range(1, 8)] == [policy.delay_for_attempt(n) for n in range(1, 8)]


# --- schedules ------------------------------------------------------------------------------------


def test_period_fields_and_dict():
    p = Period(days=1, seconds=1.5)
    assert (p.days, p.seconds, p.hours) == (1, 1.5, 0)
    assert p.to_dict() == {
        "kind": "period",
        "years": 0,
        "months": 0,
        "weeks": 0,
        "days": 1,
        "hours": 0,
        "minutes": 0,
        "seconds": 1.5,
    }
    assert schedule_from_dict(p.to_dict()) == p
    assert repr(p) == "Period(days=1, seconds=1.5)"


@pytest.mark.parametrize("unit", ["years", "months", "weeks", "days", "hours", "minutes"])
def test_period_only_seconds_may_be_float(unit):
    with pytest.raises(InvalidError, match=f"Period `{unit}` must be an int, not float"):
        Period(**{unit: 1.5})


def test_period_rejects_negative_zero_and_bool():
    with pytest.raises(InvalidError, match="Period `hours` must be non-negative, got -1"):
        Period(hours=-1)
    with pytest.raises(InvalidError, match="Period must be positive"):
        Period()
    with pytest.raises(InvalidError, match="Period `days` must be an int, not bool"):
        Period(days=True)
    with pytest.raises(InvalidError, match="Period `seconds` must be a number"):
        Period(seconds="5")


def test_period_is_keyword_only():
    with pytest.raises(TypeError):
        Period(1)  # type: ignore[misc]


def test_cron_fields_and_dict():
    c = Cron("0  9 * * 1", timezone="Europe/Paris")
    assert c.cron_string == "0 9 * * 1"
    assert c.to_dict() == {"kind": "cron", "cron_string": "0 9 * * 1", "timezone": "Europe/Paris"}
    assert schedule_from_dict(c.to_dict()) == c
    assert Cron("* * * * *").timezone == "UTC"
    assert Cron("0 0 * * * 2030").cron_string == "0 0 * * * 2030"
    assert repr(Cron("* * * * *")) == "Cron('* * * * *')"


@pytest.mark.parametrize("bad", ["* * *", "", "* * * * * * *"])
def test_cron_needs_five_fields(bad):
    with pytest.raises(InvalidError, match="expected 5 space-separated fields"):
        Cron(bad)


def test_cron_rejects_non_strings():
    with pytest.raises(InvalidError, match="Cron expects a string"):
        Cron(5)  # type: ignore[arg-type]
    with pytest.raises(InvalidError, match="timezone"):
        Cron("* * * * *", timezone="")


def test_schedule_from_dict_unknown_kind():
    with pytest.raises(InvalidError, match="Unknown schedule kind"):
        schedule_from_dict({"kind": "sometimes"})


# --- Image ----------------------------------------------------------------------------------------


def test_debian_slim_defaults_to_running_python():
    image = Image.debian_slim()
    assert image.python_version == RUNNING_PYTHON
    assert image.steps == (ImageStep.make("debian_slim", python_version=RUNNING_PYTHON, force_build=False),)
    assert not image.has_build_steps


@pytest.mark.parametrize("version", ["3.12", "3.9.18", "3.13.0"])
def test_debian_slim_accepts_version_strings(version):
    assert Image.debian_slim(version).python_version == version


def test_debian_slim_float_version_is_type_error():
    with pytest.raises(TypeError, match=r"^The `python_version` argument should be a string, not a float\.$"):
        Image.debian_slim(3.10)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="should be a string, not a int"):
        Image.debian_slim(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["3", "2.7", "3.x", "python3.11", "3.11.1.1", "3.11 "])
def test_debian_slim_rejects_malformed_versions(bad):
    with pytest.raises(InvalidError, match="Invalid `python_version`"):
        Image.debian_slim(bad)


def test_image_cannot_be_constructed_directly():
    with pytest.raises(InvalidError, match=r"Image\.debian_slim"):
        Image()


def test_instance_method_called_on_class():
    with pytest.raises(InvalidError, match="Image has not been constructed yet"):
        Image.pip_install("numpy")  # type: ignore[arg-type]


def test_image_methods_return_new_images():
    base = Image.debian_slim()
    extended = base.pip_install("numpy")
    assert base is not extended
    assert len(base.steps) == 1 and len(extended.steps) == 2
    assert extended.steps[0] == base.steps[0]
    assert extended.has_build_steps


def test_image_steps_are_immutable():
    image = Image.debian_slim().env({"A": "1"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        image.steps[1].kind = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        image.steps[1].params["vars"]["A"] = "2"  # type: ignore[index]
    assert image.steps[1].to_dict() == {"kind": "env", "vars": {"A": "1"}}


def test_pip_install_flattens_strings_and_lists():
    image = Image.debian_slim().pip_install("numpy", ["pandas", "pyarrow"], [], index_url="https://x/simple")
    step = image.steps[-1]
    assert step.kind == "pip_install"
    assert step.get("packages") == ("numpy", "pandas", "pyarrow")
    assert step.get("index_url") == "https://x/simple"


def test_install_without_packages_returns_same_image():
    image = Image.debian_slim()
    assert image.pip_install() is image
    assert image.pip_install([]) is image
    assert image.apt_install() is image
    assert image.run_commands() is image
    assert image.uv_pip_install() is image


def test_pip_install_rejects_non_strings():
    with pytest.raises(InvalidError, match="packages must only contain strings"):
        Image.debian_slim().pip_install("numpy", 3)  # type: ignore[arg-type]
    with pytest.raises(InvalidError, match="packages must only contain strings"):
        Image.debian_slim().apt_install(["git", None])  # type: ignore[list-item]


def test_build_step_options_are_validated():
    with pytest.raises(InvalidError, match=r"list or tuple of `modal\.Secret`"):
        Image.debian_slim().pip_install("x", secrets=Secret.from_dict({}))  # type: ignore[arg-type]
    with pytest.raises(InvalidError, match="Image ENV variables must be strings"):
        Image.debian_slim().run_commands("make", env={"A": 1})  # type: ignore[dict-item]
    step = Image.debian_slim().apt_install("git", env={"A": "1", "B": None}).steps[-1]
    assert dict(step.get("env")) == {"A": "1"}


def test_uv_pip_install_with_requirements(tmp_path):
    req = tmp_path / "req.txt"
    image = Image.debian_slim().uv_pip_install("torch", requirements=[req], uv_version="0.5.0")
    step = image.steps[-1]
    assert step.get("packages") == ("torch",)
    assert step.get("requirements") == (str(req),)
    with pytest.raises(InvalidError, match="`requirements` must be a list"):
        Image.debian_slim().uv_pip_install(requirements=str(req))  # type: ignore[arg-type]


def test_requirements_and_pyproject_paths_are_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image = Image.debian_slim().pip_install_from_requirements("requirements.txt")
    assert image.steps[-1].get("requirements_txt") == str(tmp_path / "requirements.txt")
    image = Image.debian_slim().pip_install_from_pyproject("pyproject.toml", optional_dependencies=["dev"])
    assert image.steps[-1].get("pyproject_toml") == str(tmp_path / "pyproject.toml")
    assert image.steps[-1].get("optional_dependencies") == ("dev",)


def test_content_hash_follows_requirements_file_content(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("numpy==2.0\n")
    image = Image.debian_slim().pip_install_from_requirements(req)
    first = image.content_hash()
    assert first == image.content_hash()
    req.write_text("numpy==2.1\n")
    assert image.content_hash() != first


def test_apt_install_and_run_commands():
    image = Image.debian_slim().apt_install("git", ["curl"]).run_commands("echo hi", ["ls", "pwd"])
    assert image.steps[1].get("packages") == ("git", "curl")
    assert image.steps[2].get("commands") == ("echo hi", "ls", "pwd")


def test_run_commands_volumes_must_be_volumes():
    with pytest.raises(InvalidError, match="not usable as a volume"):
        Image.debian_slim().run_commands("ls", volumes={"/data": "vol"})  # type: ignore[dict-item]


def _download_weights():
    return "weights"


def _download_other_weights():
    return "other weights"


def test_run_function_step():
    image = Image.debian_slim().run_function(_download_weights, args=(1,), kwargs={"a": 2}, timeout=60)
    step = image.steps[-1]
    assert step.kind == "run_function"
    assert step.get("function") is _download_weights
    assert step.get("args") == (1,)
    assert dict(step.get("kwargs")) == {"a": 2}
    assert step.get("timeout") == 60


def test_run_function_rejects_lambdas_and_non_callables():
    with pytest.raises(InvalidError, match=r"^Image\.run_function does not support lambda functions\.$"):
        Image.debian_slim().run_function(lambda: None)
    with pytest.raises(InvalidError, match="needs a function"):
        Image.debian_slim().run_function("not a function")  # type: ignore[arg-type]
    with pytest.raises(InvalidError, match="`timeout` must be a positive int"):
        Image.debian_slim().run_function(_download_weights, timeout=0)


def test_run_function_hash_uses_source():
    a = Image.debian_slim().run_function(_download_weights)
    b = Image.debian_slim().run_function(_download_other_weights)
    assert a.content_hash() != b.content_hash()
    assert a.content_hash() == Image.debian_slim().run_function(_download_weights).content_hash()
    # Without source (a builtin), the qualname is used instead.
    assert len(Image.debian_slim().run_function(print).content_hash()) == 64


def test_env_and_workdir():
    image = Image.debian_slim().env({"A": "1"}).workdir("/app")
    assert image.steps[1].to_dict() == {"kind": "env", "vars": {"A": "1"}}
    assert image.steps[2].to_dict() == {"kind": "workdir", "path": "/app"}
    assert Image.debian_slim().workdir(PurePosixPath("/srv")).steps[-1].get("path") == "/srv"


def test_env_values_must_be_strings():
    with pytest.raises(
        InvalidError, match=re.escape("Image ENV variables must be strings. Invalid keys: ['B']")
    ):
        Image.debian_slim().env({"A": "1", "B": 2})  # type: ignore[dict-item]
    with pytest.raises(InvalidError, match="Image ENV variables must be strings"):
        Image.debian_slim().env({"A": None})  # type: ignore[dict-item]


def test_add_local_file(tmp_path):
    image = Image.debian_slim().add_local_file(tmp_path / "a.txt", "/data/a.txt")
    assert image.steps[-1].to_dict() == {
        "kind": "add_local_file",
        "local_path": str(tmp_path / "a.txt"),
        "remote_path": "/data/a.txt",
        "copy": False,
    }
    assert image.steps[-1].is_mount
    into_dir = Image.debian_slim().add_local_file(tmp_path / "a.txt", "/data/")
    assert into_dir.steps[-1].get("remote_path") == "/data/a.txt"


def test_add_local_paths_must_be_absolute(tmp_path):
    message = r"^image\.add_local_file\(\) currently only supports absolute remote_path values$"
    with pytest.raises(InvalidError, match=message):
        Image.debian_slim().add_local_file(tmp_path / "a.txt", "data/a.txt")
    with pytest.raises(InvalidError, match=r"image\.add_local_dir\(\) currently only supports absolute"):
        Image.debian_slim().add_local_dir(tmp_path, "data")


def test_add_local_dir_and_python_source(tmp_path):
    image = (
        Image.debian_slim()
        .add_local_dir(tmp_path, "/src", ignore=["*.pyc"])
        .add_local_python_source("pkg", "pkg.sub")
    )
    assert image.steps[1].get("ignore") == ("*.pyc",)
    assert image.steps[2].get("modules") == ("pkg", "pkg.sub")
    with pytest.raises(InvalidError, match="is not a module name"):
        Image.debian_slim().add_local_python_source("not-a-module")
    with pytest.raises(InvalidError, match="`ignore` must be"):
        Image.debian_slim().add_local_dir(tmp_path, "/src", ignore=5)  # type: ignore[arg-type]


def test_build_step_after_mounted_local_files_is_rejected(tmp_path):
    mounted = Image.debian_slim().add_local_dir(tmp_path, "/src")
    with pytest.raises(InvalidError, match=r"tried to run a build step after using `image\.add_local_\*`"):
        mounted.pip_install("numpy")
    with pytest.raises(InvalidError, match="set `copy=True`"):
        mounted.add_local_file(tmp_path / "a", "/a", copy=True)
    # More mounted files are fine, and copied files may be followed by build steps.
    mounted.add_local_python_source("pkg")
    Image.debian_slim().add_local_dir(tmp_path, "/src", copy=True).pip_install("numpy")


def test_from_registry():
    image = Image.from_registry("ubuntu:24.04", add_python="3.12")
    assert image.python_version == "3.12"
    assert image.base.kind == "from_registry"
    assert image.base.get("tag") == "ubuntu:24.04"
    assert not image.has_build_steps
    assert Image.from_registry("python:3.12-slim").python_version is None
    with pytest.raises(TypeError, match="`add_python` argument should be a string, not a float"):
        Image.from_registry("ubuntu", add_python=3.12)  # type: ignore[arg-type]
    with pytest.raises(InvalidError, match="needs an image reference"):
        Image.from_registry("")
    with pytest.raises(InvalidError, match=r"`secret` must be a modal\.Secret"):
        Image.from_registry("ubuntu", secret="token")  # type: ignore[arg-type]


def test_content_hash_is_stable_and_distinguishes_steps():
    a = Image.debian_slim("3.12").pip_install("numpy")
    assert re.fullmatch(r"[0-9a-f]{64}", a.content_hash())
    assert a.content_hash() == Image.debian_slim("3.12").pip_install("numpy").content_hash()
    assert a.content_hash() != Image.debian_slim("3.12").pip_install("pandas").content_hash()
    assert a.content_hash() != Image.debian_slim("3.11").pip_install("numpy").content_hash()
    assert a.content_hash() != Image.debian_slim("3.12").content_hash()
    # force_build changes how a step is built, not what it produces.
    assert a.content_hash() == Image.debian_slim("3.12").pip_install("numpy", force_build=True).content_hash()


def test_content_hash_does_not_depend_on_secret_values():
    a = Image.debian_slim().pip_install("x", secrets=[Secret.from_dict({"TOKEN": "one"})])
    b = Image.debian_slim().pip_install("x", secrets=[Secret.from_dict({"TOKEN": "two"})])
    assert a.content_hash() == b.content_hash()


def test_image_equality():
    assert Image.debian_slim("3.12").apt_install("git") == Image.debian_slim("3.12").apt_install("git")
    assert Image.debian_slim("3.12") != Image.debian_slim("3.11")
    assert hash(Image.debian_slim("3.12")) == hash(Image.debian_slim("3.12"))


def test_image_repr():
    image = Image.debian_slim("3.12").pip_install("numpy").env({"A": "1"})
    assert repr(image) == "Image.debian_slim(python_version='3.12').pip_install('numpy').env(...)"


def test_pipe():
    def add_git(image, *, extra):
        return image.apt_install("git", extra)

    assert Image.debian_slim().pipe(add_git, extra="curl").steps[-1].get("packages") == ("git", "curl")
    with pytest.raises(InvalidError, match="must return an Image"):
        Image.debian_slim().pipe(lambda image: None)


def test_imports_swallows_import_errors_locally(monkeypatch):
    monkeypatch.delenv("HOMEPORT_IS_REMOTE", raising=False)
    reached = []
    with Image.debian_slim().imports():
        import homeport_package_that_does_not_exist  # noqa: F401

        reached.append(True)
    assert reached == []


def test_imports_raises_inside_a_container(monkeypatch):
    monkeypatch.setenv("HOMEPORT_IS_REMOTE", "1")
    with pytest.raises(ImportError), Image.debian_slim().imports():
        import homeport_package_that_does_not_exist  # noqa: F401


def test_imports_warns_about_other_errors_locally(monkeypatch):
    monkeypatch.delenv("HOMEPORT_IS_REMOTE", raising=False)
    with pytest.warns(UserWarning, match="caught a non-ImportError exception"), Image.debian_slim().imports():
        raise ValueError("boom")


def test_imports_lets_a_clean_block_run(monkeypatch):
    monkeypatch.setenv("HOMEPORT_IS_REMOTE", "1")
    with Image.debian_slim().imports():
        import json  # noqa: F401


# --- Secret ---------------------------------------------------------------------------------------

SECRET_VALUE = "s3cr3t-Value-do-not-print"


def test_secret_from_dict():
    s = Secret.from_dict({"A": "1", "B": None})
    assert s.local_values == {"A": "1"}
    assert s.name is None and s.required_keys == ()
    assert Secret.from_dict().local_values == {}


def test_secret_local_values_is_a_copy():
    s = Secret.from_dict({"A": "1"})
    s.local_values["A"] = "changed"  # type: ignore[index]
    assert s.local_values == {"A": "1"}


@pytest.mark.parametrize("bad", [{"A": 1}, {1: "a"}, ["A"], "A=1"])
def test_secret_from_dict_rejects_non_strings(bad):
    with pytest.raises(InvalidError, match=re.escape("dict[str, Union[str, None]]")):
        Secret.from_dict(bad)  # type: ignore[arg-type]


def test_secret_cannot_be_constructed_directly():
    with pytest.raises(InvalidError, match=r"Secret\.from_name"):
        Secret()


def test_secret_from_local_environ(monkeypatch):
    monkeypatch.setenv("HP_TEST_TOKEN", SECRET_VALUE)
    monkeypatch.delenv("HOMEPORT_IS_REMOTE", raising=False)
    s = Secret.from_local_environ(["HP_TEST_TOKEN"])
    monkeypatch.setenv("HP_TEST_TOKEN", "later")
    assert s.local_values == {"HP_TEST_TOKEN": SECRET_VALUE}


def test_secret_from_local_environ_missing_key(monkeypatch):
    monkeypatch.delenv("HP_TEST_MISSING", raising=False)
    monkeypatch.delenv("HOMEPORT_IS_REMOTE", raising=False)
    message = "Could not find local environment variable 'HP_TEST_MISSING' for Secret.from_local_environ"
    with pytest.raises(InvalidError, match=f"^{re.escape(message)}$"):
        Secret.from_local_environ(["HP_TEST_MISSING"])


def test_secret_from_local_environ_is_empty_in_a_container(monkeypatch):
    monkeypatch.delenv("HP_TEST_MISSING", raising=False)
    monkeypatch.setenv("HOMEPORT_IS_REMOTE", "1")
    assert Secret.from_local_environ(["HP_TEST_MISSING"]).local_values == {}


def test_secret_from_local_environ_needs_a_list():
    with pytest.raises(InvalidError, match="must be a list of environment variable names, not str"):
        Secret.from_local_environ("HOME")  # type: ignore[arg-type]
    with pytest.raises(InvalidError, match="must only contain strings"):
        Secret.from_local_environ(["HOME", 1])  # type: ignore[list-item]


DOTENV = """\
# a comment
export A=1
B = two words   # trailing comment
C='single #quoted $A'
D="double \\"quoted\\"\\nline ${A}"
E="multi
line"
F=
G=x#not-a-comment
H=${A}-${UNSET_HP_VAR:-fallback}
JUST_A_KEY

"""


def test_parse_dotenv():
    assert parse_dotenv(DOTENV) == {
        "A": "1",
        "B": "two words",
        "C": "single #quoted $A",
        "D": 'double "quoted"\nline 1',
        "E": "multi\nline",
        "F": "",
        "G": "x#not-a-comment",
        "H": "1-fallback",
    }


@pytest.mark.parametrize(
    ("text", "line"),
    [("A=1\n=2\n", 2), ('A="open\nB=2\n', 1), ("A=1\nB 2\n", 2), ("A='x' junk\n", 1)],
)
def test_parse_dotenv_errors_name_the_line(text, line):
    with pytest.raises(InvalidError, match=f"Could not parse .env line {line}"):
        parse_dotenv(text)


def test_secret_from_dotenv_file_and_directory(tmp_path):
    (tmp_path / ".env").write_text(f"TOKEN={SECRET_VALUE}\n")
    (tmp_path / "prod.env").write_text("MODE=prod\n")
    assert Secret.from_dotenv(tmp_path).local_values == {"TOKEN": SECRET_VALUE}
    assert Secret.from_dotenv(str(tmp_path / ".env")).local_values == {"TOKEN": SECRET_VALUE}
    assert Secret.from_dotenv(tmp_path, filename="prod.env").local_values == {"MODE": "prod"}


def test_secret_from_dotenv_searches_the_cwd_and_its_parents(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("A=1\n")
    (tmp_path / "prod.env").write_text("MODE=prod\n")
    deep = tmp_path / "project" / "src"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert Secret.from_dotenv().local_values == {"A": "1"}  # two levels up
    assert Secret.from_dotenv(filename="prod.env").local_values == {"MODE": "prod"}
    (tmp_path / "project" / ".env").write_text("A=nearer\n")
    assert Secret.from_dotenv().local_values == {"A": "nearer"}  # the nearest one wins


def test_secret_from_dotenv_starts_at_a_path_or_beside_a_file(tmp_path):
    (tmp_path / ".env").write_text("WHERE=top\n")
    script = tmp_path / "app" / "main.py"
    script.parent.mkdir()
    script.write_text("print('not a .env file')\n")
    assert Secret.from_dotenv(str(script)).local_values == {"WHERE": "top"}  # from_dotenv(__file__)
    assert Secret.from_dotenv(script.parent).local_values == {"WHERE": "top"}


def test_secret_from_dotenv_finds_none_an_empty_secret_and_a_warning(tmp_path, monkeypatch):
    """Modal gives an empty secret when no file is found; Homeport says so too."""
    monkeypatch.delenv("HOMEPORT_IS_REMOTE", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match=rf"found no hp-none\.env file in {re.escape(str(tmp_path))} or its parents"):
        assert Secret.from_dotenv(filename="hp-none.env").local_values == {}
    with pytest.raises(InvalidError, match=r"starting path .*no-such-dir.* does not exist"):
        Secret.from_dotenv(tmp_path / "no-such-dir")
    monkeypatch.setenv("HOMEPORT_IS_REMOTE", "1")  # in a container: the values come through the environment
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Secret.from_dotenv(filename="hp-none.env").local_values == {}
        assert Secret.from_dotenv(tmp_path / "no-such-dir").local_values == {}


def test_secret_from_name():
    s = Secret.from_name("my-secret_1.0", environment_name="dev", required_keys=["A", "B"])
    assert s.name == "my-secret_1.0"
    assert s.environment_name == "dev"
    assert s.required_keys == ("A", "B")
    assert s.local_values is None
    assert not s.is_local
    assert repr(s) == "Secret.from_name('my-secret_1.0', environment_name='dev')"


@pytest.mark.parametrize("bad", ["has space", "x" * 65, "slash/name", "", "ap-" + "a" * 22, None])
def test_secret_from_name_validates_the_name(bad):
    message = (
        f"Invalid Secret name: '{bad}'. Names may contain only alphanumeric characters, dashes, periods, and "
        "underscores, must be shorter than 64 characters, and cannot conflict with App ID strings."
    )
    with pytest.raises(InvalidError, match=f"^{re.escape(message)}$"):
        Secret.from_name(bad)  # type: ignore[arg-type]


def test_object_name_limit_is_64():
    assert check_object_name("x" * 64, "Volume") == "x" * 64


def test_secret_from_name_required_keys_must_be_strings():
    with pytest.raises(InvalidError, match="`required_keys` must be a list of strings"):
        Secret.from_name("s", required_keys="A")  # type: ignore[arg-type]


def test_secret_repr_never_shows_values(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text(f"TOKEN={SECRET_VALUE}\n")
    monkeypatch.setenv("HP_TEST_TOKEN", SECRET_VALUE)
    monkeypatch.delenv("HOMEPORT_IS_REMOTE", raising=False)
    secrets = [
        Secret.from_dict({"TOKEN": SECRET_VALUE}),
        Secret.from_local_environ(["HP_TEST_TOKEN"]),
        Secret.from_dotenv(tmp_path),
    ]
    for s in secrets:
        assert SECRET_VALUE not in repr(s)
        assert SECRET_VALUE not in str(s)
        assert "TOKEN" in repr(s)
    options = opts(secrets=secrets)
    assert SECRET_VALUE not in repr(options)
    assert SECRET_VALUE not in repr(Image.debian_slim().pip_install("x", secrets=secrets))


# --- Volume ---------------------------------------------------------------------------------------


def test_volume_from_name():
    v = Volume.from_name("cache", create_if_missing=True, environment_name="dev", version=2)
    assert (v.name, v.create_if_missing, v.is_ephemeral, v.version) == ("cache", True, False, 2)
    assert v.environment_name == "dev"
    assert repr(v) == "Volume.from_name('cache')"
    assert v.to_dict()["name"] == "cache"
    assert not Volume.from_name("cache").create_if_missing


def test_volume_from_name_validates():
    with pytest.raises(InvalidError, match=r"^Invalid Volume name: 'bad name'\."):
        Volume.from_name("bad name")
    with pytest.raises(InvalidError, match="Invalid Volume version: 3"):
        Volume.from_name("v", version=3)
    with pytest.raises(InvalidError, match="`create_if_missing` must be a bool"):
        Volume.from_name("v", create_if_missing="yes")  # type: ignore[arg-type]


def test_volume_ephemeral_is_a_context_manager_that_needs_the_server_only_when_entered():
    cm = Volume.ephemeral()
    assert hasattr(cm, "__enter__") and hasattr(cm, "__exit__")  # created (on the server) on entry


def test_volume_cannot_be_constructed_directly():
    with pytest.raises(InvalidError, match=r"Volume\.from_name"):
        Volume()


@pytest.mark.parametrize("method", ["commit", "reload"])
def test_volume_commit_and_reload_belong_in_containers(method):
    with pytest.raises(InvalidError, match=rf"Volume\.{method}\(\) can only be called inside a container"):
        getattr(Volume.from_name("v"), method)()


# --- function_options: defaults and unknown arguments ---------------------------------------------


def test_defaults():
    o = opts()
    assert o == FunctionOptions()
    assert (o.timeout, o.min_containers, o.buffer_containers, o.scaledown_window) == (300, 0, 0, 60)
    assert o.max_containers is None and o.retries is None and o.image is None
    assert o.secrets == () and o.volumes == {} and o.env is None


def test_none_means_default():
    assert (
        opts(min_containers=None, scaledown_window=None, serialized=None, secrets=None, volumes=None)
        == opts()
    )


def test_options_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts().timeout = 5  # type: ignore[misc]


@pytest.mark.parametrize("key", ["mounts", "gpu_config", "shared_volumes", "interactive", "typo_timeout"])
def test_unknown_keyword_is_type_error(key):
    with pytest.raises(TypeError, match=f"got an unexpected keyword argument '{key}'"):
        opts(**{key: 1})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("proxy", object()),
        ("routing_region", "us-east"),
        ("restrict_modal_access", True),
        ("i6pn", True),
        ("experimental_options", {"x": 1}),
        ("network_file_systems", {"/nfs": object()}),
    ],
)
def test_known_but_not_built_parameters(key, value):
    # Accepted when decorating (a module using them still imports, for `.local()`), refused when the
    # app runs, naming the parameter.
    o = opts(**{key: value})
    assert o.not_built == (key,)
    (sentence,) = unsupported_features(o)
    assert sentence.startswith(f"`{key}=` is not supported by Homeport yet (")
    assert sentence.endswith("remove it).") or "instead" in sentence
    assert opts(**{key: None}) == opts()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("restrict_modal_access", "yes", "`restrict_modal_access` must be bool, not str"),
        ("i6pn", 1, "`i6pn` must be bool, not int"),
        ("routing_region", 5, "`routing_region` must be str, not int"),
        ("experimental_options", ["x"], "`experimental_options` must be a dict, not list"),
        ("network_file_systems", "/nfs", "`network_file_systems` must be a dict, not str"),
    ],
)
def test_not_built_parameters_are_type_checked_when_decorating(key, value, message):
    with pytest.raises(InvalidError, match=re.escape(message)):
        opts(**{key: value})


def test_not_built_parameters_at_their_default_are_accepted():
    assert opts(restrict_modal_access=False, i6pn=False, experimental_options={}).not_built == ()


def test_not_built_parameter_is_refused_when_the_app_runs():
    from homeport import App

    app = App("not-built")
    fn = app.function(restrict_modal_access=True, i6pn=True)(_global_fn)
    assert fn.local(3) == 3  # decorating and `.local()` work
    with pytest.raises(UnimplementedError) as info:
        app._check_supported()
    text = str(info.value)
    assert "`restrict_modal_access=` is not supported by Homeport yet" in text
    assert "`i6pn=` is not supported by Homeport yet" in text


def test_allow_concurrent_inputs_is_accepted_with_a_warning_pointing_to_concurrent():
    with pytest.warns(DeprecationError, match=r"@modal\.concurrent"):
        assert opts(allow_concurrent_inputs=10).allow_concurrent_inputs == 10
    with pytest.raises(InvalidError, match="positive integer"):
        opts(allow_concurrent_inputs=0)


# --- legacy names -----------------------------------------------------------------------------------


def test_keep_warm_becomes_min_containers():
    with pytest.warns(
        DeprecationError, match=r"^`keep_warm` is deprecated; use `min_containers` instead\.$"
    ) as rec:
        o = opts(keep_warm=2)
    assert o.min_containers == 2
    assert rec[0].filename == __file__  # points at the caller, not at homeport


def test_concurrency_limit_becomes_max_containers():
    with pytest.warns(
        DeprecationError, match="`concurrency_limit` is deprecated; use `max_containers` instead."
    ):
        assert opts(concurrency_limit=4).max_containers == 4


def test_container_idle_timeout_becomes_scaledown_window():
    with pytest.warns(
        DeprecationError, match="`container_idle_timeout` is deprecated; use `scaledown_window`"
    ):
        assert opts(container_idle_timeout=1200).scaledown_window == 1200
    with pytest.warns(DeprecationError):
        assert opts(container_idle_timeout=2).scaledown_window == 2


@pytest.mark.parametrize("value", [1, 1201])
def test_container_idle_timeout_range(value):
    message = f"`container_idle_timeout` must be between 2 and 1200 seconds, got {value}"
    with pytest.raises(InvalidError, match=f"^{re.escape(message)}$"):
        opts(container_idle_timeout=value)


def test_deprecation_error_is_a_user_warning():
    assert issubclass(DeprecationError, UserWarning)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("keep_warm", "min_containers"),
        ("concurrency_limit", "max_containers"),
        ("container_idle_timeout", "scaledown_window"),
    ],
)
def test_legacy_and_modern_name_together(old, new):
    with pytest.raises(InvalidError, match=f"Cannot set both `{old}` and `{new}`"):
        opts(**{old: 5, new: 5})


def test_legacy_values_are_validated():
    with pytest.raises(InvalidError, match="`keep_warm` must be an int, not float"):
        opts(keep_warm=1.5)


# --- image, secrets, env --------------------------------------------------------------------------


def test_image_must_be_an_image():
    with pytest.raises(InvalidError, match=re.escape("Expected modal.Image object. Got <class 'str'>.")):
        opts(image="python:3.12")
    image = Image.debian_slim()
    assert opts(image=image).image is image


@pytest.mark.parametrize("bad", ["secret", {"A": "1"}, ["not a secret"]])
def test_secrets_must_be_a_list_of_secrets(bad):
    with pytest.raises(
        InvalidError, match=r"^`secrets=` has to be a list or tuple of `modal\.Secret` objects$"
    ):
        opts(secrets=bad)


def test_single_secret_not_in_a_list():
    with pytest.raises(InvalidError, match="has to be a list or tuple"):
        opts(secrets=Secret.from_dict({}))


def test_secrets_are_kept_in_order():
    a, b = Secret.from_dict({"A": "1"}), Secret.from_name("b")
    assert opts(secrets=[a, b]).secrets == (a, b)


def test_env():
    assert opts(env={"A": "1", "B": None}).env == {"A": "1"}
    with pytest.raises(InvalidError, match="dict\\[str, Union\\[str, None\\]\\]"):
        opts(env={"A": 1})


# --- timeouts ---------------------------------------------------------------------------------------


def test_timeout_none():
    message = "The `timeout` parameter cannot be set to None: https://modal.com/docs/guide/timeouts"
    with pytest.raises(InvalidError, match=f"^{re.escape(message)}$"):
        opts(timeout=None)


@pytest.mark.parametrize("param", ["timeout", "startup_timeout"])
@pytest.mark.parametrize("value", [0, -5, 86401])
def test_timeout_range(param, value):
    message = f"`{param}` must be between 1 and 86400 seconds, got {value}"
    with pytest.raises(InvalidError, match=f"^{re.escape(message)}$"):
        opts(**{param: value})


@pytest.mark.parametrize("param", ["timeout", "startup_timeout"])
def test_timeout_bounds_and_type(param):
    assert getattr(opts(**{param: 1}), param) == 1
    assert getattr(opts(**{param: 86400}), param) == 86400
    with pytest.raises(InvalidError, match=f"`{param}` must be an int"):
        opts(**{param: 1.5})
    with pytest.raises(InvalidError, match=f"`{param}` must be an int"):
        opts(**{param: True})


def test_startup_timeout_defaults_to_none():
    assert opts().startup_timeout is None


# --- retries ----------------------------------------------------------------------------------------


def test_retries_int():
    assert opts(retries=3).retries == Retries(max_retries=3, initial_delay=1.0, backoff_coefficient=1.0)
    r = Retries(max_retries=2, backoff_coefficient=3.0)
    assert opts(retries=r).retries is r


def test_retries_wrong_type():
    message = "Retries parameter must be an integer or instance of modal.Retries. Found: <class 'str'> on Function 'f'."
    with pytest.raises(InvalidError, match=f"^{re.escape(message)}$"):
        opts(retries="3")


def test_retries_negative_int():
    with pytest.raises(InvalidError, match="Function retries must be non-negative"):
        opts(retries=-1)


def test_retries_on_generators_and_web_functions():
    with pytest.raises(InvalidError, match=r"^Generator Functions do not support retries\.$"):
        function_options(tag="g", is_generator=True, retries=2)
    with pytest.raises(InvalidError, match=r"^Web Functions do not support retries\.$"):
        function_options(tag="w", is_web=True, retries=Retries(max_retries=1))
    assert function_options(tag="g", is_generator=True).retries is None
    assert function_options(tag="g", is_generator=True, retries=0).retries == Retries(
        max_retries=0, backoff_coefficient=1.0
    )


# --- schedule ---------------------------------------------------------------------------------------


def _needs_x(x):
    return x


def _defaults_only(x=1, *args, **kwargs):
    return x


def test_schedule_needs_a_function_callable_without_arguments():
    message = f"Function {_needs_x} has a schedule, so it needs to support being called with no arguments"
    with pytest.raises(InvalidError, match=f"^{re.escape(message)}$"):
        function_options(tag="f", raw_f=_needs_x, schedule=Period(hours=1))
    o = function_options(tag="f", raw_f=_defaults_only, schedule=Cron("0 * * * *"))
    assert o.schedule == Cron("0 * * * *")
    assert opts(schedule=Period(days=1)).schedule == Period(days=1)


def test_schedule_type():
    with pytest.raises(InvalidError, match=r"`schedule` must be a modal\.Period or modal\.Cron"):
        opts(schedule="0 * * * *")


# --- resources ----------------------------------------------------------------------------------------


def test_cpu():
    assert opts(cpu=2).cpu == (2.0, None)
    assert opts(cpu=0.25).cpu == (0.25, None)
    assert opts(cpu=(1, 4)).cpu == (1.0, 4.0)
    assert opts(cpu=[1, 1]).cpu == (1.0, 1.0)


@pytest.mark.parametrize(
    ("cpu", "message"),
    [
        (0, "CPU request must be a positive number"),
        (-1, "CPU request must be a positive number"),
        ((0, 2), "CPU request must be a positive number"),
        ((1, 0), "CPU limit must be a positive number"),
        ((2, 1), "Cannot specify a CPU limit lower than request: 1 < 2"),
        ("2", "`cpu` must be a number or a (request, limit) tuple"),
        ((1, 2, 3), "`cpu` must be a number or a (request, limit) tuple"),
        (float("nan"), "`cpu` must be a finite number of cores"),
        (float("inf"), "`cpu` must be a finite number of cores"),
        ((1, float("nan")), "`cpu` must be a finite number of cores"),
        ((float("nan"), 2), "`cpu` must be a finite number of cores"),
    ],
)
def test_cpu_validation(cpu, message):
    with pytest.raises(InvalidError, match=re.escape(message)):
        opts(cpu=cpu)


def test_memory():
    assert opts(memory=1024).memory == (1024, None)
    assert opts(memory=(512, 2048)).memory == (512, 2048)


@pytest.mark.parametrize(
    ("memory", "message"),
    [
        (0, "Memory request must be a positive integer (MiB)"),
        ((0, 10), "Memory request must be a positive integer (MiB)"),
        ((2048, 1024), "Cannot specify a memory limit lower than request: 1024 < 2048"),
        (1.5, "`memory` must be an int (MiB)"),
        ("1G", "`memory` must be an int (MiB)"),
    ],
)
def test_memory_validation(memory, message):
    with pytest.raises(InvalidError, match=re.escape(message)):
        opts(memory=memory)


def test_ephemeral_disk():
    assert opts(ephemeral_disk=10240).ephemeral_disk == 10240
    with pytest.raises(InvalidError, match="`ephemeral_disk` must be at least 1, got 0"):
        opts(ephemeral_disk=0)


# --- gpu ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gpu", "expected"),
    [
        ("T4", ("T4:1",)),
        ("a100:2", ("A100:2",)),
        ("a100-80gb:8", ("A100-80GB:8",)),
        ("h100!", ("H100!:1",)),
        ("B200+:4", ("B200+:4",)),
        ("any", ("ANY:1",)),
        (["H100", "a100-80gb:2"], ("H100:1", "A100-80GB:2")),
    ],
)
def test_gpu_normalization(gpu, expected):
    assert opts(gpu=gpu).gpu == expected
    assert parse_gpu_config(gpu) == expected


@pytest.mark.parametrize("gpu_type", GPU_TYPES)
def test_every_documented_gpu_type_is_accepted(gpu_type):
    assert opts(gpu=gpu_type.lower()).gpu == (f"{gpu_type}:1",)


def test_gpu_count_must_be_an_integer():
    with pytest.raises(InvalidError, match=r"^Invalid GPU count: two\. Value must be an integer\.$"):
        opts(gpu="A100:two")


@pytest.mark.parametrize("gpu", ["T4:0", "H100:9", "A10:5"])
def test_gpu_count_range(gpu):
    with pytest.raises(InvalidError, match="Invalid GPU count"):
        opts(gpu=gpu)


def test_gpu_unknown_type_lists_valid_ones():
    with pytest.raises(InvalidError, match="Invalid GPU type: 'V100'") as info:
        opts(gpu="v100")
    for gpu_type in GPU_TYPES:
        assert gpu_type in str(info.value)


@pytest.mark.parametrize("gpu", [1, [], ["T4", 2]])
def test_gpu_bad_values(gpu):
    with pytest.raises(InvalidError, match="GPU"):
        opts(gpu=gpu)


# --- volumes ------------------------------------------------------------------------------------------


def test_volumes():
    vol = Volume.from_name("cache")
    o = opts(volumes={"/cache": vol, PurePosixPath("/data"): Volume.from_name("data")})
    assert list(o.volumes) == ["/cache", "/data"]
    assert o.volumes["/cache"] is vol


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("data", "Volume data must be a canonical, absolute path."),
        ("/data/../x", "Volume /data/../x must be a canonical, absolute path."),
        ("/", "Volume / cannot be mounted into root directory."),
        ("/root", "Volume /root cannot be mounted at '/root'."),
        ("/tmp", "Volume /tmp cannot be mounted at '/tmp'."),
    ],
)
def test_volume_paths(path, message):
    with pytest.raises(InvalidError, match=f"^{re.escape(message)}$"):
        opts(volumes={path: Volume.from_name("v")})


def test_volume_values_must_be_volumes():
    message = "Object of type <class 'str'> mounted at '/data' is not usable as a volume."
    with pytest.raises(InvalidError, match=f"^{re.escape(message)}$"):
        opts(volumes={"/data": "v"})
    with pytest.raises(InvalidError, match="volumes must be a dict"):
        opts(volumes=[Volume.from_name("v")])


def test_same_volume_at_two_paths():
    vol = Volume.from_name("v")
    with pytest.raises(InvalidError, match="The same Volume cannot be mounted in multiple locations"):
        opts(volumes={"/a": vol, "/b": vol})
    with pytest.raises(InvalidError, match="/a, /b"):
        opts(volumes={"/a": Volume.from_name("v"), "/b": Volume.from_name("v")})
    x = Volume._new(name=None, is_ephemeral=True)
    y = Volume._new(name=None, is_ephemeral=True)
    assert len(opts(volumes={"/a": x, "/b": y}).volumes) == 2  # two ephemeral volumes are two volumes


# --- scaling --------------------------------------------------------------------------------------------


def test_container_counts():
    o = opts(min_containers=1, max_containers=5, buffer_containers=2, scaledown_window=120)
    assert (o.min_containers, o.max_containers, o.buffer_containers, o.scaledown_window) == (1, 5, 2, 120)
    assert opts(min_containers=3, max_containers=3).max_containers == 3


def test_min_containers_must_be_int():
    with pytest.raises(InvalidError, match=r"^`min_containers` must be an int, not float$"):
        opts(min_containers=1.0)


def test_min_greater_than_max():
    message = "`min_containers` (5) cannot be greater than `max_containers` (2)"
    with pytest.raises(InvalidError, match=f"^{re.escape(message)}$"):
        opts(min_containers=5, max_containers=2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_containers": -1}, "`min_containers` must be non-negative, got -1"),
        ({"buffer_containers": -1}, "`buffer_containers` must be non-negative, got -1"),
        ({"max_containers": 0}, "`max_containers` must be at least 1, got 0"),
        ({"max_containers": "3"}, "`max_containers` must be an int, not str"),
        ({"buffer_containers": True}, "`buffer_containers` must be an int, not bool"),
    ],
)
def test_container_count_validation(kwargs, message):
    with pytest.raises(InvalidError, match=f"^{re.escape(message)}$"):
        opts(**kwargs)


@pytest.mark.parametrize("value", [1, 3601, 0])
def test_scaledown_window_range(value):
    with pytest.raises(InvalidError, match=r"^`scaledown_window` must be between 2 and 3600 \(inclusive\)$"):
        opts(scaledown_window=value)


def test_scaledown_window_bounds_and_type():
    assert opts(scaledown_window=2).scaledown_window == 2
    assert opts(scaledown_window=3600).scaledown_window == 3600
    with pytest.raises(InvalidError, match="`scaledown_window` must be an int"):
        opts(scaledown_window=60.0)


# --- placement, flags and the rest -----------------------------------------------------------------------


def test_region_and_cloud():
    assert opts(region="us-east").region == ("us-east",)
    assert opts(region=["us-east", "eu-west"]).region == ("us-east", "eu-west")
    assert opts(cloud="aws").cloud == "aws"
    for bad in ([], 5, ["us-east", 1], ""):
        with pytest.raises(InvalidError, match="`region` must be a region name"):
            opts(region=bad)
    with pytest.raises(InvalidError, match="`cloud` must be a string"):
        opts(cloud=1)


def test_name():
    assert opts(name="custom").name == "custom"
    assert opts(name="my-fn_v1.2").name == "my-fn_v1.2"
    with pytest.raises(InvalidError, match=r"^Invalid value for `name`: Must be string\.$"):
        opts(name=5)


@pytest.mark.parametrize("bad", ["bad name!", "", "x" * 65, "with/slash", "ap-" + "a" * 22, "tab\there"])
def test_invalid_function_name_is_rejected_when_decorating(bad):
    with pytest.raises(InvalidError, match=re.escape(f"Invalid Function name: '{bad}'. Names may contain only")):
        opts(name=bad)


def test_invalid_name_fails_at_the_decorator():
    from homeport import App

    app = App("names")
    with pytest.raises(InvalidError, match="Invalid Function name: 'bad name!'"):
        app.function(name="bad name!")(_global_fn)
    assert app.registered_functions == {}


@pytest.mark.parametrize(
    "flag",
    ["serialized", "enable_memory_snapshot", "single_use_containers", "block_network", "nonpreemptible"],
)
def test_boolean_flags(flag):
    assert getattr(opts(**{flag: True}), flag) is True
    assert getattr(opts(), flag) is False
    with pytest.raises(InvalidError, match=f"`{flag}` must be True or False"):
        opts(**{flag: "yes"})


def test_include_source():
    assert opts().include_source is None
    assert opts(include_source=False).include_source is False
    with pytest.raises(InvalidError, match="`include_source` must be True or False"):
        opts(include_source=1)


def test_max_inputs():
    with pytest.raises(InvalidError, match=r"^Only `max_inputs=1` is currently supported$"):
        opts(max_inputs=2)
    with pytest.raises(InvalidError, match=r"^`max_inputs` must be positive$"):
        opts(max_inputs=0)
    with pytest.raises(InvalidError, match="`max_inputs` must be an int"):
        opts(max_inputs=1.0)
    with pytest.warns(DeprecationError, match="use `single_use_containers=True` instead"):
        o = opts(max_inputs=1)
    assert o.max_inputs == 1 and o.single_use_containers


# --- unsupported_features -----------------------------------------------------------------------------------


def test_built_options_are_not_reported(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("A=1\n")
    monkeypatch.setenv("HP_TEST_TOKEN", "x")
    monkeypatch.delenv("HOMEPORT_IS_REMOTE", raising=False)
    o = opts(
        image=Image.debian_slim(),
        secrets=[
            Secret.from_dict({"A": "1"}),
            Secret.from_local_environ(["HP_TEST_TOKEN"]),
            Secret.from_dotenv(tmp_path),
        ],
        env={"B": "2"},
        timeout=10,
        startup_timeout=20,
        retries=2,
        min_containers=1,
        max_containers=3,
        buffer_containers=1,
        scaledown_window=30,
        name="custom",
        serialized=True,
        enable_memory_snapshot=True,
        include_source=False,
    )
    assert unsupported_features(o) == []
    assert unsupported_features(opts(image=Image.debian_slim(f"{RUNNING_PYTHON}.1"))) == []
    assert unsupported_features(opts()) == []


def test_gpu_is_the_control_planes_to_refuse():
    # Its backend may place GPUs (Ray) or not (it refuses when the app starts): the SDK cannot tell.
    assert unsupported_features(opts(gpu="T4")) == []


@pytest.mark.parametrize(
    ("kwargs", "mentions"),
    [
        ({"ephemeral_disk": 1024}, "`ephemeral_disk=...`"),
        ({"cloud": "aws"}, "`cloud=...`"),
        ({"image": Image.from_registry("ubuntu:24.04")}, "Image.from_registry('ubuntu:24.04')"),
        ({"block_network": True}, "`block_network=True`"),
        ({"nonpreemptible": True}, "`nonpreemptible=True`"),
        ({"single_use_containers": True}, "`single_use_containers=True`"),
    ],
)
def test_each_unbuilt_option_gets_one_sentence(kwargs, mentions):
    sentences = unsupported_features(opts(**kwargs))
    assert len(sentences) == 1
    assert mentions in sentences[0]
    assert "is not supported by Homeport yet" in sentences[0]
    assert "; " in sentences[0] and sentences[0].endswith(".")


def test_max_inputs_is_reported():
    with pytest.warns(DeprecationError):
        o = opts(max_inputs=1)
    sentences = unsupported_features(o)
    assert len(sentences) == 1 and "`max_inputs=1`" in sentences[0]


def test_several_unbuilt_options():
    o = opts(gpu="A100", cpu=4, memory=4096, image=Image.from_registry("ubuntu:24.04"))
    assert len(unsupported_features(o)) == 1  # the registry image; cpu and memory are built, gpu the server's


def test_image_build_steps_and_python_versions_are_built():
    # The image builder builds them (or says at build time what this machine lacks).
    image = Image.debian_slim(OTHER_PYTHON).pip_install("numpy").apt_install("git").env({"A": "1"})
    assert unsupported_features(opts(image=image)) == []


# --- merged_env --------------------------------------------------------------------------------------------


def test_merged_env_later_sources_win():
    o = opts(
        secrets=[
            Secret.from_dict({"A": "secret-1", "B": "secret-1"}),
            Secret.from_name("stored"),
            Secret.from_dict({"B": "secret-2", "C": "secret-2"}),
        ],
        env={"C": "env", "D": "env"},
    )
    assert merged_env(o) == {"A": "secret-1", "B": "secret-2", "C": "env", "D": "env"}


def test_merged_env_empty():
    assert merged_env(opts()) == {}


def test_merged_env_reads_dotenv_and_local_environ(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("FROM_FILE=1\n")
    monkeypatch.setenv("HP_TEST_TOKEN", "tok")
    monkeypatch.delenv("HOMEPORT_IS_REMOTE", raising=False)
    o = opts(secrets=[Secret.from_dotenv(tmp_path), Secret.from_local_environ(["HP_TEST_TOKEN"])])
    assert merged_env(o) == {"FROM_FILE": "1", "HP_TEST_TOKEN": "tok"}
    assert os.environ.get("FROM_FILE") is None


def _global_fn(x=0):
    return x
