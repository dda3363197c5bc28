"""The ids a root-file-system container is given, and how its start is wrapped, as data."""

import json

from homeport import _protocol as P
from homeport._mountapi import idmap_text
from homeport.backends import ContainerSpec, Mount
from homeport.backends.local import _rootfs

ROOTFS = json.dumps({"lower": ["/layers/a", "/base"], "upper": None, "work": None, "scratch": "/s", "cwd": "/app"})


def test_each_container_user_has_its_own_subordinate_ids_beyond_every_container_user():
    first = [P.subordinate_ids(P.CONTAINER_UIDS + n) for n in (0, 1, 2)]
    assert first[0] > P.CONTAINER_UIDS + P.CONTAINER_UID_COUNT  # none is another container's user
    assert first[1] - first[0] == first[2] - first[1] == 65536  # 65536 ids each, not overlapping
    assert P.subordinate_ids(65534) is None  # a shared user (HOMEPORT_CONTAINER_UID): only its root mapped
    last = P.subordinate_ids(P.CONTAINER_UIDS + P.CONTAINER_UID_COUNT - 1)
    assert last is None or last + 65536 < 1 << 32


def test_the_idmap_maps_root_to_the_container_and_the_rest_to_its_own_or_the_same_ids():
    assert idmap_text(165536, False) == "0 165536 1\n"
    assert idmap_text(165536, 1 << 20) == f"0 165536 1\n1 {1 << 20} 65535\n"
    # Without subordinate ids the image's ids map to themselves, skipping the container's own user.
    assert idmap_text(65534, True) == "0 65534 1\n1 1 65533\n65535 65535 1\n"


def test_a_web_container_in_its_own_root_is_given_only_its_own_socket_directory():
    spec = ContainerSpec(container_id="ta-1", app_id="ap-1", function_tag="f", argv=("python",),
                         env={P.ENV_WEB_SOCKET: "/st/web/ta-1/w"}, rootfs=ROOTFS,
                         mounts=(Mount("/st/web", "/st/web"), Mount("/vol", "/data")))
    mounts = _rootfs.own_web_entry(spec).mounts
    assert {(m.source, m.read_only) for m in mounts} == {("/vol", False), ("/st/web/ta-1", False)}


def test_a_container_in_its_own_root_starts_as_its_own_user_but_a_build_step_does_not(monkeypatch):
    monkeypatch.setattr(_rootfs.os, "geteuid", lambda: 0)
    argv = _rootfs.wrap(["python", "-m", "x"], ROOTFS, [Mount("/vol", "/data", read_only=False)], uid=165537)
    assert argv[:6] == ["unshare", "--mount", "--propagation", "private", "--pid", "--fork"]
    spec = json.loads(argv[argv.index(_rootfs._PACKAGE) + 1])  # after the package it runs from
    assert spec["uid"] == 165537 and spec["first"] == P.subordinate_ids(165537) and not spec["template"]
    assert spec["mounts"] == [["/vol", "/data", True]] and argv[-4:] == ["--", "python", "-m", "x"]
    template = _rootfs.wrap(["python"], ROOTFS, [], uid=65534, template=True)
    assert "--pid" not in template and json.loads(template[template.index(_rootfs._PACKAGE) + 1])["template"]
    build = json.dumps({**json.loads(ROOTFS), "upper": "/u", "work": "/w"})
    assert "chroot" in " ".join(_rootfs.wrap(["sh"], build, [], uid=165537))  # installs as root, as before
    assert "chroot" in " ".join(_rootfs.wrap(["sh"], ROOTFS, []))  # no user given: as before
