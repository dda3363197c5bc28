"""The control plane's hardening, checked without a control plane: path resolution
beneath a volume's root (with openat2 and with the O_NOFOLLOW walk), the volume store's move from names
to ids, frame limits, message validation, names, and the state directory's permissions."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat

import pytest

from homeport import _protocol as P
from homeport._names import object_name_problem
from homeport.exception import InvalidError, NotFoundError
from homeport.server import beneath
from homeport.server.validate import problem
from homeport.server.volumes import VolumeStore


@pytest.fixture(params=["openat2", "walk"])
def mode(request, monkeypatch):
    if request.param == "walk":
        monkeypatch.setattr(beneath, "_have_openat2", False)
    return request.param


@pytest.fixture
def tree(tmp_path):
    """state/{token, volumes/v/...} with links in the volume pointing out of it."""
    state = tmp_path / "state"
    vol = state / "volumes" / "v"
    (vol / "dir").mkdir(parents=True)
    (state / "token").write_text("SECRET")
    (vol / "ok.txt").write_text("fine")
    (vol / "dir" / "inner.txt").write_text("inner")
    for where in (vol, vol / "dir"):
        os.symlink("../../token", where / "token")
        os.symlink(str(state), where / "abs")
        os.symlink("../..", where / "up")
    os.mkfifo(vol / "fifo")
    return state, vol


def test_nothing_is_reached_through_a_link(tree, mode):
    state, vol = tree
    with beneath.Root(str(vol), "volume 'v'") as root:
        assert root.read("ok.txt", 0, None) == b"fine"
        assert root.read("/dir//./inner.txt", 1, 2) == b"nn"
        for path in ("token", "dir/token", "up/token", "abs/token", "dir/up/up/token", "fifo"):
            with pytest.raises((InvalidError, NotFoundError)):
                root.read(path, 0, None)
        with pytest.raises(InvalidError, match=r"'\.\.'"):
            root.read("dir/../../token", 0, None)
        assert stat.S_ISLNK(root.lstat("up").st_mode)
        for path in ("up/x", "abs/x", "dir/abs/x"):
            with pytest.raises(InvalidError, match="symbolic link"):
                root.write(path, b"pwned")
            with pytest.raises((InvalidError, NotFoundError)):
                root.remove(path, recursive=True)
        root.write("token", b"mine")  # replaces the link, not its target
        assert root.read("token", 0, None) == b"mine"
    assert (state / "token").read_text() == "SECRET"
    assert not (state / "x").exists()


def test_listing_and_copying_keep_links_as_links(tree, mode):
    state, vol = tree
    with beneath.Root(str(vol), "volume 'v'") as root:
        fd = root.open_dir([], "/")
        try:
            listed = {p: beneath.entry_type(st.st_mode) for p, st in root.scan(fd, "", True)}
        finally:
            os.close(fd)
        assert listed["up"] == listed["dir/up"] == listed["abs"] == "symlink"
        assert listed["fifo"] == "fifo" and listed["dir"] == "directory" and listed["ok.txt"] == "file"
        assert not any(p.startswith(("up/", "abs/", "dir/up/")) for p in listed)
        root.copy("dir", ["dir"], "again")  # a directory into itself: listed first, so it ends
        assert stat.S_ISLNK(root.lstat("dir/again/up").st_mode)
        assert root.read("dir/again/inner.txt", 0, None) == b"inner"
        assert not root.exists("dir/again/again")
    # Removing the tree removes the links, never what they name.
    fd = os.open(vol.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        beneath.rmtree_at(fd, "v")
    finally:
        os.close(fd)
    assert not vol.exists() and (state / "token").read_text() == "SECRET"


def test_volumes_stored_under_names_move_to_ids_once(tmp_path):
    state = tmp_path / "state"
    root = state / "volumes"
    (root / "models").mkdir(parents=True)
    (root / "models" / "w.bin").write_bytes(b"w")
    (state / "state.db").write_bytes(b"")
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute("CREATE TABLE volumes (name TEXT PRIMARY KEY, created_at REAL NOT NULL, "
               "ephemeral INTEGER NOT NULL DEFAULT 0)")
    for name in ("models", "..", "."):
        db.execute("INSERT INTO volumes(name, created_at) VALUES (?, 0)", (name,))
    store = VolumeStore(db, root)
    assert store.read("models", "w.bin") == b"w"
    assert not (root / "models").exists()
    for name in ("..", "."):
        assert store.listdir(name, "/", True) == []  # its own empty directory, not the state directory
        store.put(name, [("f", b"x")], force=False)
        store.delete(name)
    assert (state / "state.db").exists() and store.read("models", "w.bin") == b"w"
    assert sorted(p.name for p in root.iterdir()) == [store._id("models")]
    VolumeStore(db, root)  # a second start changes nothing
    assert store.read("models", "w.bin") == b"w"
    with pytest.raises(InvalidError, match="Invalid Volume name"):
        store.create("a/b")


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data) -> None:
        self.written.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def test_an_oversized_frame_is_refused_before_it_is_buffered():
    from homeport._wire import FramedProtocol

    async def body():
        got, refused = [], []
        proto = FramedProtocol(got.append)
        proto.max_frame = 1024
        proto.on_oversize = refused.append
        transport = _Transport()
        proto.connection_made(transport)
        proto.data_received(P.encode({"t": "small"}))
        proto.data_received(P.HEADER.pack(0xFFFFFFF0) + b"\0" * 4096)
        proto.data_received(b"\0" * 4096)  # what follows is dropped
        assert got == [{"t": "small"}] and refused == [0xFFFFFFF0]
        assert transport.closed and len(proto._buf) == 0
        proto.max_frame = P.MAX_MESSAGE_BYTES  # the default, for authenticated peers

    asyncio.run(body())


@pytest.mark.parametrize(("msg", "expected"), [
    ({"t": P.CALL, "call": "c", "kind": "unary", "inputs": []}, "'fid' is missing"),
    ({"t": P.CALL, "fid": 3, "call": "c", "kind": "unary", "inputs": []}, "'fid' must be a string, not int"),
    ({"t": P.CALL, "fid": "f", "call": "c", "kind": "unary", "inputs": [[0, b"", None, 4]]}, "each input"),
    ({"t": P.MAP_PUT, "call": "c", "inputs": "x"}, "'inputs' must be a list"),
    ({"t": P.VOLUME, "op": "put", "name": "v", "files": [["p", "not bytes"]]}, "[path, bytes]"),
    ({"t": P.VOLUME, "op": "read", "name": "v", "path": "p", "offset": True}, "'offset'"),
    ({"t": P.SECRET_CREATE, "name": "s", "values": ["A"]}, "'values' must be a map"),
    ([1, 2], "must be a map"),
    ({"x": 1}, "'t'"),
])
def test_malformed_messages_are_named(msg, expected):
    why = problem(msg)
    assert why is not None and expected in why, why


def test_well_formed_messages_pass():
    assert problem({"t": P.CALL, "fid": "f", "call": "c", "kind": "unary", "inputs": [[0, b"a", None]], "id": 1}) is None
    assert problem({"t": P.VOLUME, "op": "read", "name": "v", "path": "p", "offset": 0, "length": 10}) is None
    assert problem({"t": P.VOLUME, "op": "list"}) is None
    assert problem({"t": "something new"}) is None  # unknown types get their own answer


@pytest.mark.parametrize("name", ["..", ".", "a-b_c.d", "x" * 64])
def test_modal_names_are_valid(name):
    assert object_name_problem(name, "Volume") is None


@pytest.mark.parametrize("name", ["", "a/b", "../../weird name/..", "x" * 65, "ap-" + "a" * 22, None, 5])
def test_other_names_are_not(name):
    assert "Invalid Dict name" in object_name_problem(name, "Dict")


def test_a_wide_open_state_directory_is_tightened(tmp_path, monkeypatch):
    from homeport import _config

    d = tmp_path / "st"
    d.mkdir()
    os.chmod(d, 0o777)
    monkeypatch.setenv(P.ENV_STATE_DIR, str(d))
    assert _config.ensure_state_dir() == d.resolve()
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
