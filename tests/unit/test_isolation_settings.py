"""The settings that say how local containers are isolated, and the path rule behind it."""

import os
import shutil
import tempfile

import pytest

from homeport.backends.local._cgroups import DEFAULT_PIDS_MAX, Cgroup, pids_max_setting
from homeport.backends.local._templates import CONTAINER_UIDS, container_uid, isolation_settings, shared_dirs
from homeport.runtime._isolate import _blocked


def test_the_process_limit_has_a_default_and_can_be_changed_or_lifted():
    assert pids_max_setting({}) == DEFAULT_PIDS_MAX
    assert pids_max_setting({"HOMEPORT_CONTAINER_PIDS_MAX": "64"}) == 64
    assert pids_max_setting({"HOMEPORT_CONTAINER_PIDS_MAX": "0"}) is None


@pytest.mark.parametrize("bad", ["many", "-1", "1.5"])
def test_a_bad_process_limit_is_refused_with_its_name(bad):
    with pytest.raises(ValueError, match="HOMEPORT_CONTAINER_PIDS_MAX"):
        pids_max_setting({"HOMEPORT_CONTAINER_PIDS_MAX": bad})


def test_containers_become_an_unprivileged_user_unless_told_otherwise():
    assert isolation_settings({}) == {"uid": 65534}
    assert isolation_settings({"HOMEPORT_CONTAINER_UID": "100000"}) == {"uid": 100000}
    assert isolation_settings({"HOMEPORT_CONTAINER_UID": "0"}) == {"uid": None}  # keep the control plane's
    assert isolation_settings({"HOMEPORT_ISOLATION": "0"}) is None
    with pytest.raises(ValueError, match="HOMEPORT_CONTAINER_UID"):
        isolation_settings({"HOMEPORT_CONTAINER_UID": "nobody"})


def test_each_container_gets_a_host_user_of_its_own_unless_one_is_named():
    assert container_uid(set(), {}) == CONTAINER_UIDS
    assert container_uid({CONTAINER_UIDS, CONTAINER_UIDS + 2}, {}) == CONTAINER_UIDS + 1  # the lowest free
    assert container_uid(set(), {"HOMEPORT_CONTAINER_UID": "100000"}) is None  # every container: that one
    assert container_uid(set(), {"HOMEPORT_ISOLATION": "0"}) is None


def test_shared_directories_are_absolute_and_none_by_default():
    assert shared_dirs({}) == []
    assert shared_dirs({"HOMEPORT_CONTAINER_SHARED": "/a:/b/c:"}) == ["/a", "/b/c"]


def test_the_first_directory_an_unprivileged_user_cannot_pass_is_found():
    base = tempfile.mkdtemp(prefix="hp-blocked-", dir="/tmp")  # pytest's tmp_path is under a 0700 directory
    try:
        os.chmod(base, 0o755)
        closed = os.path.join(base, "closed")
        os.makedirs(os.path.join(closed, "inner"))
        os.chmod(closed, 0o700)
        uid = 65534 if os.geteuid() != 65534 else 65533
        assert _blocked(os.path.join(closed, "inner", "code.py"), uid) == closed
        os.chmod(closed, 0o711)
        assert _blocked(os.path.join(closed, "inner", "code.py"), uid) is None
    finally:
        shutil.rmtree(base)


def test_a_cgroup_without_a_process_controller_reports_no_limit_hit(tmp_path):
    cgroup = Cgroup([tmp_path], 2)
    assert cgroup.pids_limit_hit() == 0
    assert cgroup.kill() is False  # nothing to freeze or kill with: the backend says so instead


def test_a_hit_process_limit_is_read_from_pids_events(tmp_path):
    (tmp_path / "pids.events").write_text("max 7\n")
    assert Cgroup([tmp_path], 2, pids=tmp_path, pids_max=64).pids_limit_hit() == 7


def test_a_snapshots_user_namespace_maps_every_containers_own_user():
    """A memory snapshot's copies each become a per-container host user inside its user namespace:
    its maps hold them all, mapped to themselves (but where its own user is one of them)."""
    from homeport.runtime._copyusers import map_text

    assert map_text(65534) == f"0 65534 1\n{CONTAINER_UIDS} {CONTAINER_UIDS} 65536\n"
    assert map_text(CONTAINER_UIDS + 5) == f"0 {CONTAINER_UIDS + 5} 1\n"  # no overlap: the kernel refuses one
