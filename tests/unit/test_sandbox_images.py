"""The image a container may ask for its sandbox: built confined, never from the host's files."""

from __future__ import annotations

import modal
import pytest

from homeport._image_request import build_request
from homeport.server.sandbox_launch import container_image_refusal


def test_build_steps_are_allowed_and_marked_confined():
    request = build_request(modal.Image.debian_slim().pip_install("six").env({"A": "1"}).workdir("/w")
                            .apt_install("curl").run_commands("true"))
    assert container_image_refusal(request) is None
    assert all(step["_confined"] for step in request["steps"])
    assert container_image_refusal(request) is None  # checked twice (access, then the build): the same answer


@pytest.mark.parametrize("image", [
    modal.Image.debian_slim().add_local_file("/etc/hostname", "/h"),
    modal.Image.debian_slim().add_local_file("/etc/hostname", "/h", copy=True),
    modal.Image.debian_slim().add_local_dir("/etc", "/e"),
    modal.Image.debian_slim().add_local_python_source("json"),
])
def test_steps_that_read_local_files_are_refused(image):
    why = container_image_refusal(build_request(image))
    assert why is not None and "its own machine's disk" in why


def test_what_is_not_a_parameter_of_the_step_is_refused():
    base = {"kind": "debian_slim", "python_version": None}
    assert "files" in container_image_refusal({"steps": [base, {"kind": "env", "vars": {}, "files": [["/a", "/b"]]}]})
    assert "not" in container_image_refusal({"steps": [base, {"kind": "mystery"}]})
    assert "named secrets" in container_image_refusal({"steps": [base, {"kind": "pip_install", "packages": ["x"],
                                                                         "secret_refs": [{"name": "s"}]}]})
    assert "requirements" in container_image_refusal({"steps": [base, {"kind": "uv_pip_install", "packages": [],
                                                                        "requirements": ["/r.txt"]}]})
    assert "malformed" in container_image_refusal({"steps": "nope"})
