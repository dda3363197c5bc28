"""Image layers are named by their steps, each chained to the layer before (pure, no I/O)."""

import pytest

from homeport._image import Image
from homeport._image_request import build_request
from homeport.image_builder.layers import (
    describe,
    first_to_build,
    image_id,
    layer_keys,
    split_mounts,
    step_digest,
)

BASE = {"kind": "debian_slim", "python_version": "3.12", "interpreter": {"path": "/usr/bin/python3.12", "version": "3.12.4"}}
PIP = {"kind": "pip_install", "packages": ["six==1.16.0"], "env": {}, "force_build": False}
ENV = {"kind": "env", "vars": {"A": "1"}}


def test_same_steps_same_keys():
    assert layer_keys([BASE, PIP, ENV]) == layer_keys([dict(BASE), dict(PIP), dict(ENV)])
    # Key order inside a step does not matter.
    assert layer_keys([dict(reversed(list(BASE.items())))]) == layer_keys([BASE])


def test_a_changed_step_renames_its_layer_and_every_later_one():
    before = layer_keys([BASE, PIP, ENV])
    after = layer_keys([BASE, {**PIP, "packages": ["six==1.17.0"]}, ENV])
    assert after[0] == before[0]  # the layer before the change is reused
    assert after[1] != before[1]
    assert after[2] != before[2]  # the same step on top of a changed layer is a different layer


def test_keys_chain_through_earlier_steps():
    assert layer_keys([BASE, ENV])[1] != layer_keys([{**BASE, "python_version": "3.11"}, ENV])[1]
    assert layer_keys([BASE, PIP])[:1] == layer_keys([BASE])
    assert len(set(layer_keys([BASE, ENV, ENV]))) == 3  # a repeated step is a new layer each time


def test_the_interpreter_found_on_this_machine_counts():
    other = {**BASE, "interpreter": {"path": "/opt/python3.12", "version": "3.12.1"}}
    assert layer_keys([BASE]) != layer_keys([other])


def test_unhashed_parameters_and_private_keys():
    assert step_digest(PIP) == step_digest({**PIP, "force_build": True})
    assert step_digest(PIP) == step_digest({**PIP, "_secret_env": {"TOKEN": "one"}})
    assert step_digest({**PIP, "_secret_env": {"TOKEN": "one"}}) == step_digest({**PIP, "_secret_env": {"TOKEN": "two"}})
    fn = {"kind": "run_function", "function": {"qualname": "f", "source": "def f(): pass", "_module_file": "/a.py"},
          "args": b"\x80", "timeout": 10}
    assert step_digest(fn) == step_digest({**fn, "timeout": 20, "function": {**fn["function"], "_module_file": "/b.py"}})
    assert step_digest(fn) != step_digest({**fn, "function": {**fn["function"], "source": "def f(): return 1"}})
    assert step_digest(fn) != step_digest({**fn, "args": b"\x81"})


def test_values_without_a_canonical_form_are_refused():
    with pytest.raises(TypeError, match="no canonical form"):
        step_digest({"kind": "env", "vars": object()})


def test_first_to_build():
    keys = ["a", "b", "c"]
    built: set[str] = set()
    assert first_to_build(keys, built.__contains__, [False] * 3) == 0
    built |= {"a", "b"}
    assert first_to_build(keys, built.__contains__, [False] * 3) == 2
    built.add("c")
    assert first_to_build(keys, built.__contains__, [False] * 3) == 3  # all cached
    assert first_to_build(keys, built.__contains__, [False, True, False]) == 1  # force_build rebuilds from there
    assert first_to_build(keys, {"c"}.__contains__, [False] * 3) == 3  # the deepest layer wins


def test_mounted_local_files_are_not_layers():
    copied = {"kind": "add_local_dir", "copy": True, "remote_path": "/app"}
    mounted = {"kind": "add_local_file", "copy": False, "remote_path": "/a.txt"}
    layers, mounts = split_mounts([BASE, PIP, copied, mounted])
    assert layers == [BASE, PIP, copied]
    assert mounts == [mounted]


def test_image_id_covers_mounted_files():
    key = layer_keys([BASE])[-1]
    assert image_id(key, None) == image_id(key, None)
    assert image_id(key, None) != image_id(key, "mounts-1") != image_id(key, "mounts-2")
    assert image_id(key, None).startswith("im-")


def test_describe():
    assert describe(PIP) == "pip_install('six==1.16.0')"
    assert describe(BASE) == "debian_slim('3.12')"
    assert describe(ENV) == "env(A)"
    assert describe({"kind": "workdir", "path": "/app"}) == "workdir('/app')"
    assert describe({"kind": "run_function", "function": {"qualname": "download"}}) == "run_function(download)"
    many = {"kind": "apt_install", "packages": [f"p{i}" for i in range(6)]}
    assert describe(many).endswith("... (6 in all))")


def test_sdk_requests_hash_like_their_images(tmp_path):
    """What the SDK sends: equal images give equal layer keys; a changed step changes it and later ones."""
    req = tmp_path / "requirements.txt"
    req.write_text("six==1.16.0\n")

    def keys(image):
        return layer_keys(build_request(image)["steps"])

    a = Image.debian_slim("3.12").pip_install_from_requirements(req).env({"A": "1"})
    assert keys(a) == keys(Image.debian_slim("3.12").pip_install_from_requirements(req).env({"A": "1"}))
    b = Image.debian_slim("3.12").pip_install("six").env({"A": "1"})
    assert keys(a)[0] == keys(b)[0] and keys(a)[1:] != keys(b)[1:]
