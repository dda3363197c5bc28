"""What a container sees of the control plane's state directory, as data and arguments."""

from pathlib import Path

import pytest

from homeport.backends import Mount, PrivateDir
from homeport.backends.local import _private, _sandbox
from homeport.backends.local._backend import LocalBackend
from homeport.server._main import _private_dir

STATE = "/home/u/.local/state/homeport"
PRIVATE = PrivateDir(STATE, (Mount(f"{STATE}/server.sock", f"{STATE}/server.sock"),
                             Mount(f"{STATE}/images", f"{STATE}/images", read_only=True),
                             Mount("/elsewhere/web", "/elsewhere/web")))


def test_the_plan_keeps_only_paths_under_the_directory_shallower_first():
    plan = _private.plan(PRIVATE, [f"{STATE}/containers/tpl-1/ta-1/"])
    assert plan == {"dir": STATE, "keep": [[f"{STATE}/server.sock", False], [f"{STATE}/images", True],
                                           [f"{STATE}/containers/tpl-1/ta-1", False]],
                    "outside": [["/elsewhere/web", False]]}  # bound over itself by the same rule (`_hide`)
    assert _private.plan(None, ["/x"]) is None  # nothing to hide: a backend made without a state directory
    assert _private.plan(PrivateDir(STATE), [STATE, f"{STATE}x/y"])["keep"] == []  # not the directory, nor a sibling


def test_bubblewrap_covers_the_directory_then_binds_back_and_drops_its_powers():
    args = _private.bwrap_args(_private.plan(PRIVATE, [f"{STATE}/containers/ta-1"]))
    assert args[:5] == ["--unshare-user", "--cap-drop", "ALL", "--tmpfs", STATE]
    assert args[5:] == ["--bind-try", f"{STATE}/server.sock", f"{STATE}/server.sock",
                        "--ro-bind-try", f"{STATE}/images", f"{STATE}/images",
                        "--bind-try", f"{STATE}/containers/ta-1", f"{STATE}/containers/ta-1",
                        "--bind-try", "/elsewhere/web", "/elsewhere/web"]  # kept outside the directory


@pytest.fixture
def bwrap(monkeypatch):
    monkeypatch.setattr(_sandbox.shutil, "which", lambda name: "/usr/bin/bwrap")


def test_a_container_without_mounts_runs_under_bubblewrap_to_hide_it(bwrap):
    hide = _private.plan(PRIVATE)
    argv = _sandbox.wrap(["python", "-m", "homeport.runtime"], (), None, "/work", hide=hide)
    assert "/usr/bin/bwrap" in argv and argv[-4:] == ["--", "python", "-m", "homeport.runtime"]
    assert argv[argv.index("--tmpfs", argv.index("/usr/bin/bwrap") + 3) + 1] == STATE
    assert argv[argv.index("--chdir") + 1] == "/work"
    assert _sandbox.wrap(["python"], (), None, None) == ["python"]  # nothing to hide, nothing to mount


def test_mounts_are_bound_after_the_directory_is_covered(bwrap):
    build_dir = f"{STATE}/images/.tmp-layer"  # an image build step writes there: bound on top
    argv = _sandbox.wrap(["sh"], [Mount(build_dir, build_dir), Mount("/host/vol", "/data")], None, None,
                         host_read_only=True, hide=_private.plan(PRIVATE))
    tmpfs = next(i for i, a in enumerate(argv) if a == "--tmpfs" and argv[i + 1] == STATE)
    assert tmpfs < argv.index(build_dir) and tmpfs < argv.index("/data")
    assert argv.index("--ro-bind-try") < argv.index(build_dir)  # images read-only, the build's own dir writable


def test_a_root_file_system_image_is_left_as_it_is(bwrap):
    rootfs = '{"lower": ["/l"], "scratch": "/s", "cwd": "/"}'
    assert _sandbox.wrap(["python"], (), rootfs, None, hide=_private.plan(PRIVATE)) == \
        _sandbox.wrap(["python"], (), rootfs, None)


def test_the_server_keeps_its_socket_the_images_read_only_and_the_web_sockets():
    private = _private_dir(Path(STATE), Path(f"{STATE}/server.sock"), f"{STATE}/web")
    assert private.path == STATE
    assert {(m.source, m.read_only) for m in private.keep} == {
        (f"{STATE}/server.sock", False), (f"{STATE}/images", True), (f"{STATE}/web", False)}
    assert all(m.source == m.target for m in private.keep)
    # Where the state directory's path is too long for socket addresses, under /tmp: kept all the same.
    long = _private_dir(Path(STATE), Path(f"{STATE}/server.sock"), "/tmp/hp-web-x")
    assert ("/tmp/hp-web-x", False) in {(m.source, m.read_only) for m in long.keep}


def test_a_shared_directory_outside_is_read_only_to_a_container_but_for_its_own_entry(tmp_path):
    web = tmp_path / "hp-web-x"
    (web / "ta-1").mkdir(parents=True)
    private = PrivateDir(STATE, (Mount(str(web), str(web)),))
    plan = _private.plan(private, _private.own_entries(private, "ta-1"), container=True)
    assert plan["keep"] == [] and plan["outside"] == [[str(web), True], [str(web / "ta-1"), False]]
    args = _private.bwrap_args(plan)
    assert args[-6:] == ["--ro-bind-try", str(web), str(web), "--bind-try", str(web / "ta-1"), str(web / "ta-1")]


def test_an_app_is_told_once_that_its_containers_see_the_directory():
    from homeport.backends import ContainerSpec

    backend = LocalBackend(private=PRIVATE)
    said = []
    for cid, app in (("ta-1", "ap-1"), ("ta-2", "ap-1"), ("ta-3", "ap-2")):
        spec = ContainerSpec(container_id=cid, app_id=app, function_tag="f", argv=("python",))
        backend._visible(spec, "user namespaces are disabled", lambda c, fd, line: said.append((c, fd, line)))
    assert [(c, fd) for c, fd, _ in said] == [("ta-1", 2), ("ta-3", 2)]
    assert STATE.encode() in said[0][2] and b"user namespaces are disabled" in said[0][2]


def test_a_bubblewrap_that_cannot_hide_it_is_found_out_once(tmp_path, monkeypatch):
    import asyncio

    fake = tmp_path / "bwrap"
    fake.write_text(f"#!/bin/sh\necho call >> {tmp_path}/calls\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(_sandbox.shutil, "which", lambda name: str(fake))
    backend = LocalBackend(private=PRIVATE)
    assert asyncio.run(backend._bwrap_hides()) == "bubblewrap fails here: bwrap: No permissions to create new namespace"
    assert asyncio.run(backend._bwrap_hides()) is not None
    assert (tmp_path / "calls").read_text().count("call") == 1


def test_a_shared_directory_is_read_only_to_a_container_but_for_its_own_entry(tmp_path):
    """The web sockets' directory: every container may write its own `<dir>/<cid>` there, nothing else
    (another container's socket cannot be replaced); a template's own view keeps it writable."""
    state = tmp_path / "state"
    (state / "web").mkdir(parents=True)
    private = PrivateDir(str(state), (Mount(f"{state}/server.sock", f"{state}/server.sock"),
                                      Mount(f"{state}/images", f"{state}/images", read_only=True),
                                      Mount(f"{state}/web", f"{state}/web")))
    own = _private.own_entries(private, "ta-1")
    assert own == [f"{state}/web/ta-1"] and (state / "web" / "ta-1").is_dir()
    plan = _private.plan(private, own, container=True)
    assert plan["keep"] == [[f"{state}/server.sock", False], [f"{state}/images", True], [f"{state}/web", True],
                            [f"{state}/web/ta-1", False]]
    assert [f"{state}/web", False] in _private.plan(private, own)["keep"]  # not a container: as kept
    args = _private.bwrap_args(plan)
    assert args.index(f"{state}/web/ta-1") > args.index(f"{state}/web")  # its own bound over the read-only one
    assert _private.bwrap_args(plan, lock=False)[:2] == ["--tmpfs", str(state)]  # the runtime drops privilege itself
    _private.remove_own_entries(private, "ta-1")
    assert not (state / "web" / "ta-1").exists()
