"""An image build step is a boundary too. `apt_install` and `run_commands` of an image with its own
root file system run as root of the layer they write, and code in a container can ask for such an image
(`Sandbox.create(image=...)`); a step used to run as real host root in a chroot with the host's
processes, /dev and kernel in view. Its commands must reach none of the host: not the state directory's
token through `/proc/<pid>/root` or out of the chroot, not another process's environment, not the raw
disks, not a mount or a kernel setting.
"""

import importlib.util
import os
import subprocess
import uuid

import pytest

from homeport import _modal_alias
from homeport.testing import Platform

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def _rootfs_missing():
    from homeport.image_builder.rootfs import DebianBase, missing

    return None if DebianBase().ready and missing() is None else missing()


needs_rootfs = pytest.mark.skipif(_rootfs_missing() is not None or os.geteuid() != 0,
                                  reason=f"needs root and root file system images ({_rootfs_missing()})")


@needs_rootfs
def test_a_build_step_reaches_nothing_of_the_host(tmp_path, apps_path, monkeypatch):
    # A host process with a secret in its environment.
    bystander = subprocess.Popen(["sleep", "600"], env={**os.environ, "HP_ESCAPE_SECRET": "1"})
    try:
        seen, token = _build_and_look(tmp_path, apps_path, monkeypatch)
    finally:
        bystander.kill()
        bystander.wait()
    assert seen["mark"] == os.environ["HP_ESCAPE_MARK"], seen  # the commands ran, in this build
    assert token not in seen["proc_root"] and token not in seen["chroot"], seen
    assert int(seen["pids"]) < 10, seen  # its own processes only
    assert seen["environ"] == "0", seen  # no other process's environment
    assert seen["raw_disk"] == "0", seen
    assert seen["mount"] == "refused" and seen["sysctl"] == "refused", seen


def _build_and_look(tmp_path, apps_path, monkeypatch):
    with Platform(str(tmp_path / "p")) as p:
        monkeypatch.setenv("HP_ESCAPE_STATE", str(p.state_dir))
        monkeypatch.setenv("HP_ESCAPE_MARK", uuid.uuid4().hex)
        _modal_alias.install()
        spec = importlib.util.spec_from_file_location("escape_build", os.path.join(apps_path, "escape_build.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        with module.app.run(show_logs=False):
            seen = module.look.remote()
        return seen, (p.state_dir / "token").read_text().strip()
