"""A container is a boundary, on the control plane's side: what hostile code in a container (or anything that can reach the
socket) gets out of volume operations, names, frames and malformed messages. Each attack must fail."""

import contextlib
import io
import os
import socket
import struct
import sys
import time
import warnings

import msgpack
import psutil
import pytest

from homeport import _protocol as P
from homeport.exception import InvalidError, NotFoundError
from homeport.testing import homeport_cli, running

pytestmark = pytest.mark.integration

LINKS = ("token", "key", "db", "other", "up", "root", "etc", "abs-token", "abs-state")
# Paths that reach through a planted link: none may be read, listed, copied, written or removed.
THROUGH = ("up/token", "up/secret.key", "up/state.db", "abs-state/token", "other/private.txt", "root/etc/passwd",
           "dir/up/token", "up/volumes")


@pytest.fixture(scope="module")
def escape(platform, apps_path):
    """The attack app, imported as `homeport run` would import it (`import modal` is Homeport)."""
    from homeport import _modal_alias

    _modal_alias.install()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import escape
        escape.import_warnings = [str(w.message) for w in caught]
        with running("escape"):
            yield escape
    finally:
        sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "_AliasFinder"]
        for name in [m for m in sys.modules if m == "modal" or m.startswith("modal.")]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def planted(escape, platform):
    escape.plant.remote(str(platform.state_dir))
    return escape.vol


def _secrets(state_dir) -> dict[str, bytes]:
    return {n: (state_dir / n).read_bytes() for n in ("token", "secret.key")}


def _refused(op, *args, **kwargs):
    with pytest.raises((InvalidError, NotFoundError)):
        result = op(*args, **kwargs)
        if hasattr(result, "__next__"):
            b"".join(result)


def test_links_are_listed_as_symlinks_and_nothing_beneath_them(planted):
    from homeport.volume import FileEntryType

    entries = {e.path: e.type for e in planted.listdir("/", recursive=True)}
    for name in LINKS:
        assert entries[name] == FileEntryType.SYMLINK, (name, entries.get(name))
        assert entries[f"dir/{name}"] == FileEntryType.SYMLINK
    assert entries["ok.txt"] == FileEntryType.FILE and entries["dir"] == FileEntryType.DIRECTORY
    assert entries["fifo"] == FileEntryType.FIFO
    assert not [p for p in entries if p.split("/")[0] in LINKS and "/" in p]  # no link was descended
    for link in ("token", "up", "root", "other", "abs-state", "dir/up"):  # a link is listed as itself
        assert {e.path: e.type for e in planted.listdir(link, recursive=True)} == {link: FileEntryType.SYMLINK}
    for through in THROUGH:
        _refused(planted.listdir, through)


def test_read_file_never_follows_a_link(planted, platform):
    for name in (*LINKS, *THROUGH):
        _refused(planted.read_file, name)
    _refused(planted.read_file, "fifo")  # opened without blocking (or this would hang), refused as not a regular file
    assert b"".join(planted.read_file("ok.txt")) == b"fine"


def test_copy_files_copies_links_as_links_and_refuses_paths_through_them(planted, platform):
    from homeport.volume import FileEntryType

    secrets = _secrets(platform.state_dir)
    planted.copy_files(["token", "key", "up"], "/copies/")
    copies = {e.path: e.type for e in planted.listdir("/copies")}
    assert copies == {f"copies/{n}": FileEntryType.SYMLINK for n in ("token", "key", "up")}
    _refused(planted.read_file, "copies/token")
    planted.copy_files(["dir"], "/dircopy", recursive=True)
    assert {e.type for e in planted.listdir("/dircopy")} == {FileEntryType.SYMLINK}
    for through in THROUGH:
        _refused(planted.copy_files, [through], "/stolen")
    _refused(planted.copy_files, ["ok.txt"], "up/planted.txt")  # nor written through a link
    _refused(planted.copy_files, ["ok.txt"], "abs-state/")
    assert not (platform.state_dir / "planted.txt").exists() and not (platform.state_dir / "ok.txt").exists()
    assert _secrets(platform.state_dir) == secrets


def test_put_and_remove_never_reach_through_a_link(planted, platform):
    state = platform.state_dir
    secrets = _secrets(state)
    for through in ("up/pwned", "abs-state/pwned", "root/tmp/pwned", "dir/up/pwned"):
        with pytest.raises((InvalidError, NotFoundError)), planted.batch_upload(force=True) as batch:
            batch.put_file(io.BytesIO(b"pwned"), through)
    assert not (state / "pwned").exists()
    for through in THROUGH:
        _refused(planted.remove_file, through, recursive=True)
    # Writing onto a link replaces the link, not its target.
    with planted.batch_upload(force=True) as batch:
        batch.put_file(io.BytesIO(b"mine"), "key")
    assert b"".join(planted.read_file("key")) == b"mine"
    planted.remove_file("abs-state", recursive=True)  # the link goes, not the directory it names
    planted.remove_file("token")
    assert (state / "state.db").exists()
    assert _secrets(state) == secrets
    assert b"".join(planted.read_file("ok.txt")) == b"fine"


def test_the_cli_never_follows_a_link(planted, platform, tmp_path):
    state = platform.state_dir
    secrets = _secrets(state)
    for name in ("db", "up/token", "other/private.txt", "etc"):
        out = homeport_cli("volume", "get", "escape-a", name, str(tmp_path / "one"))
        assert out.returncode != 0, out.stdout
        assert not (tmp_path / "one").exists()
    out = homeport_cli("volume", "get", "escape-a", "/", str(tmp_path / "all"))
    assert out.returncode == 0, out.stderr
    got = {}
    for dirpath, dirnames, filenames in os.walk(tmp_path / "all"):
        for f in filenames + dirnames:
            p = os.path.join(dirpath, f)
            assert not os.path.islink(p), p
            if os.path.isfile(p):
                with open(p, "rb") as fh:
                    got[os.path.relpath(p, tmp_path / "all")] = fh.read()
    assert got.get("ok.txt") == b"fine"
    assert not any(v in secrets.values() or b"other volume" in v or b"SQLite" in v for v in got.values())
    for args in (("ls", "escape-a", "up/volumes"), ("ls", "escape-a", "root/etc"), ("rm", "-r", "escape-a", "up/volumes"),
                 ("rm", "escape-a", "dir/up/token")):
        out = homeport_cli("volume", *args)
        assert out.returncode != 0, (args, out.stdout)
    out = homeport_cli("volume", "ls", "escape-a", "/")
    assert out.returncode == 0 and "symlink" in out.stdout, out.stdout
    assert _secrets(state) == secrets and (state / "state.db").exists()


def test_dot_names_are_only_names(platform, tmp_path):
    state = platform.state_dir
    keep = "names-keep"
    assert homeport_cli("volume", "create", keep).returncode == 0
    f = tmp_path / "x.txt"
    f.write_text("x")
    assert homeport_cli("volume", "put", keep, str(f), "/kept.txt").returncode == 0
    for name in ("..", "."):
        out = homeport_cli("volume", "create", name)
        assert out.returncode == 0, out.stderr
        out = homeport_cli("volume", "ls", name)
        assert out.returncode == 0, out.stderr
        assert "state.db" not in out.stdout and "token" not in out.stdout and "kept" not in out.stdout
        assert homeport_cli("volume", "put", name, str(f), "/x.txt").returncode == 0
    assert not (state / "x.txt").exists() and not (state / "volumes" / "x.txt").exists()
    for name in ("..", "."):
        out = homeport_cli("volume", "delete", "-y", name)
        assert out.returncode == 0, out.stderr
    assert (state / "token").exists() and (state / "state.db").exists() and (state / "secret.key").exists()
    out = homeport_cli("volume", "ls", keep)
    assert out.returncode == 0 and "kept.txt" in out.stdout
    assert homeport_cli("volume", "delete", "-y", keep).returncode == 0


def test_the_server_checks_every_name(platform):
    bad = ("a/b", "../x", "../../weird name/..", "x" * 65, "", "sp ace")
    with _Raw(platform) as c:
        for name in bad:
            for msg in ({"t": P.VOLUME, "op": "create", "name": name},
                        {"t": P.SECRET_CREATE, "name": name, "values": {"A": "1"}},
                        {"t": P.APP_DEPLOY, "name": name, "functions": []},
                        {"t": P.APP_LOOKUP, "name": name, "create_if_missing": True}):
                reply = c.request(msg)
                assert reply["ok"] is False and reply["code"] == "invalid", (msg, reply)
                assert "Invalid" in reply["msg"] and "name" in reply["msg"]
        names = {a["name"] for a in c.request({"t": P.APP_LIST})["v"]}
        assert not names & set(bad)
        assert c.request({"t": P.VOLUME, "op": "create", "name": "..", "exist_ok": True})["ok"]  # valid, as in Modal
        assert c.request({"t": P.VOLUME, "op": "delete", "name": ".."})["ok"]


def test_a_malformed_dict_or_queue_operation_is_refused_naming_its_field(platform):
    """Each Dict and Queue operation decodes as its own type: a field it needs that is missing or of the
    wrong type is answered `invalid`, naming the field, and nothing is stored."""
    with _Raw(platform) as c:
        made = c.request({"t": P.DICT, "op": "lookup", "name": "escape-dq", "create_if_missing": True})
        assert made["ok"], made
        oid = made["v"]["object_id"]
        for msg, field in (
            ({"t": P.DICT, "op": "put", "oid": oid, "value": b"v"}, "'key' is missing"),
            ({"t": P.DICT, "op": "put", "oid": oid, "key": "not pickled", "value": b"v"}, "'key'"),
            ({"t": P.DICT, "op": "update", "oid": oid, "items": [[b"k"]]}, "'items[0]'"),
            ({"t": P.DICT, "op": "page", "oid": oid, "after": "0; DROP TABLE dict_entries"}, "'after'"),
            ({"t": P.DICT, "op": "next", "oid": oid}, "'op'"),  # a Queue's operation
            ({"t": P.DICT, "op": "get", "key": b"k"}, "'oid' is missing"),
            ({"t": P.QUEUE, "op": "get", "oid": "qu-x", "n": "5"}, "'n'"),
        ):
            reply = c.request(msg)
            assert reply["ok"] is False and reply["code"] == "invalid" and field in reply["msg"], (msg, reply)
        # The connection still answers, and nothing was stored.
        reply = c.request({"t": P.DICT, "op": "len", "oid": oid})
        assert reply["ok"] and reply["v"] == 0, reply
        assert c.request({"t": P.DICT, "op": "delete", "oid": oid})["ok"]


def test_an_app_named_like_a_path_does_not_deploy(platform):
    import homeport

    with pytest.raises(InvalidError, match="Invalid App name"):
        homeport.App("../../weird name/..").deploy()
    assert "../../weird name/.." not in homeport_cli("app", "list").stdout


def _rss(platform) -> int:
    return psutil.Process(platform.pid).memory_info().rss


def test_an_oversized_frame_before_authentication_closes_the_connection(platform, escape):
    before = _rss(platform)
    for _ in range(5):
        with _Raw(platform, hello=False) as c:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # it may close while we write
                c.sock.sendall(struct.pack(">I", 0xFFFFFFF0) + b"\0" * 4096)
            reply = c.recv()
            assert reply["ok"] is False and "before authentication" in reply["msg"], reply
            assert c.at_eof()
    assert _rss(platform) - before < 64 << 20
    assert escape.target.remote(1) == 2  # the control plane serves on


def test_an_oversized_frame_after_authentication_closes_the_connection(platform, escape):
    before = _rss(platform)
    with _Raw(platform) as c:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            c.sock.sendall(struct.pack(">I", P.MAX_MESSAGE_BYTES + 1) + b"\0" * 4096)
        reply = c.recv()
        assert reply["ok"] is False and "after authentication" in reply["msg"], reply
        assert c.at_eof()
    assert _rss(platform) - before < 64 << 20
    # Arguments far over the pre-authentication limit still travel (they are checked after the hello).
    assert escape.size.remote(b"x" * (8 << 20)) == 8 << 20


def test_malformed_messages_get_a_clear_answer(platform, escape):
    with _Raw(platform) as c:
        reply = c.request({"t": P.CALL, "call": "fc-x", "kind": "unary", "inputs": []})
        assert reply["code"] == "invalid" and "'fid'" in reply["msg"] and "missing" in reply["msg"], reply
        reply = c.request({"t": P.CALL, "fid": ["not", "a", "string"], "call": "fc-x", "kind": "unary", "inputs": []})
        assert reply["code"] == "invalid" and "'fid'" in reply["msg"], reply
        reply = c.request({"t": P.CALL, "fid": escape.target.object_id, "call": "fc-y", "kind": "unary",
                           "inputs": [[0, "not bytes"]]})
        assert reply["code"] == "invalid" and "input" in reply["msg"], reply
        reply = c.request({"t": P.VOLUME, "op": "read", "name": "escape-a", "path": 5})
        assert reply["code"] == "invalid" and "'path'" in reply["msg"], reply
        reply = c.request({"t": P.CALL_GET})
        assert reply["code"] == "invalid" and "'call'" in reply["msg"], reply
        # map_put for a call that does not exist: answered, with a request id or on the call's outputs.
        reply = c.request({"t": P.MAP_PUT, "call": "fc-nope", "inputs": [[0, b"x", None]]})
        assert reply["ok"] is False and reply["code"] == "not_found", reply
        c.send({"t": P.MAP_PUT, "call": "fc-nope2", "inputs": [[3, b"x", None]]})
        out = c.recv_until(lambda m: m.get("t") == P.OUTPUTS and m.get("call") == "fc-nope2")
        assert out["items"][0][0] == 3 and out["items"][0][2]["code"] == "not_found"
        assert c.request({"t": P.SERVER_STATUS})["ok"]  # the connection is still served
    assert escape.target.remote(2) == 4


def test_containers_forked_from_one_template_make_their_own_ids_and_random_numbers(escape):
    seen: dict[int, list[dict]] = {}
    deadline = time.monotonic() + 90
    obj = escape.Forked()
    while len(seen) < 2 and time.monotonic() < deadline:
        for info in obj.spawn_one.map([0.3] * 6):
            seen.setdefault(info["pid"], []).append(info)
    assert len(seen) == 2, seen
    infos = [i for group in seen.values() for i in group]
    assert len({i["loaded_in"] for i in infos}) == 1 and not {i["loaded_in"] for i in infos} & set(seen)  # copies
    assert all(i["result"] == 42 for i in infos)  # every spawn ran: no UNIQUE constraint failure
    assert len({i["call_id"] for i in infos}) == len(infos)
    prefixes = {pid: {i["call_id"][:15] for i in group} for pid, group in seen.items()}
    a, b = prefixes.values()
    assert not a & b, prefixes  # each container its own id prefix
    assert len({i["random"] for i in infos}) == len(infos)
    first = [group[0]["random"] for group in seen.values()]
    assert first[0] != first[1]


def test_two_functions_with_one_name_warn_and_the_later_wins(escape):
    assert any("function name 'twin' collision" in w for w in escape.import_warnings), escape.import_warnings
    assert escape.twin_b.remote() == "b"
    assert escape.twin_a.remote() == "b"


class _Raw:
    """A hand-made connection to the control plane, authenticated with the installation's token."""

    def __init__(self, platform, hello: bool = True) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(60)
        self.sock.connect(str(platform.state_dir / "server.sock"))
        self.ids = iter(range(1, 1 << 30))
        if hello:
            token = (platform.state_dir / "token").read_text().strip()
            try:
                reply = self.request({"t": P.HELLO, "role": "client", "token": token, "v": P.PROTOCOL_VERSION})
            except BaseException:
                self.sock.close()  # not left for a later test's garbage collection to report
                raise
            assert reply["ok"], reply

    def __enter__(self) -> "_Raw":
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, msg: dict) -> None:
        body = msgpack.packb(msg, use_bin_type=True)
        self.sock.sendall(struct.pack(">I", len(body)) + body)

    def recv(self) -> dict:
        (n,) = struct.unpack(">I", self._read(4))
        return msgpack.unpackb(self._read(n), raw=False, strict_map_key=False)

    def recv_until(self, pred) -> dict:
        while True:
            msg = self.recv()
            if pred(msg):
                return msg

    def request(self, msg: dict) -> dict:
        rid = next(self.ids)
        self.send({**msg, "id": rid})
        return self.recv_until(lambda m: m.get("t") == P.RESULT and m.get("id") == rid)

    def at_eof(self) -> bool:
        with contextlib.suppress(ConnectionResetError):
            while True:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    return True
        return True

    def _read(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("the control plane closed the connection")
            buf += chunk
        return buf


def test_a_map_with_big_arguments_travels_in_pieces_and_too_big_is_said(escape, monkeypatch):
    import homeport._map as M
    from homeport.exception import SerializationError

    monkeypatch.setattr(M, "MAP_MESSAGE_BYTES", 1 << 20)  # pieces of at most ~1 MiB of arguments
    assert list(escape.size.map([b"x" * (300 << 10)] * 10)) == [300 << 10] * 10
    monkeypatch.setattr(P, "MAX_PAYLOAD_BYTES", 1 << 20)
    with pytest.raises(SerializationError, match="over the limit"):
        escape.size.remote(b"x" * (2 << 20))


# Sandbox operations that do not decode as their operation's type: (message, a word the answer names).
MALFORMED_SANDBOX_OPS = [
    ({"t": P.SANDBOX}, "'op'"),
    ({"t": P.SANDBOX, "op": "format_disk", "sandbox": "sb-x"}, "format_disk"),
    ({"t": P.SANDBOX, "op": "exec", "sandbox": "sb-x"}, "'argv'"),
    ({"t": P.SANDBOX, "op": "exec", "sandbox": "sb-x", "argv": "rm -rf /"}, "'argv'"),
    ({"t": P.SANDBOX, "op": "exec", "sandbox": "sb-x", "argv": ["true"], "stdout": "/etc/passwd"}, "'stdout'"),
    ({"t": P.SANDBOX, "op": "fs", "sandbox": "sb-x", "action": "chmod", "path": "/"}, "'action'"),
    ({"t": P.SANDBOX, "op": "fs", "sandbox": "sb-x", "action": "read"}, "'path'"),
    ({"t": P.SANDBOX, "op": "main_read", "sandbox": "sb-x", "fd": 0}, "'fd'"),
    ({"t": P.SANDBOX, "op": "create", "app_id": "ap-x", "ports": ["80"]}, "'ports"),
    ({"t": P.SANDBOX, "op": "from_name", "name": "x"}, "'app_name'"),
    ({"t": P.SANDBOX, "op": "set_tags", "sandbox": "sb-x", "tags": {"a": 1}}, "'tags"),
    ({"t": P.SANDBOX, "op": "wait", "sandbox": "sb-x", "timeout": "forever"}, "'timeout'"),
]


def test_malformed_sandbox_operations_get_a_clear_answer(platform, escape):
    with _Raw(platform) as c:
        for msg, named in MALFORMED_SANDBOX_OPS:
            reply = c.request(msg)
            assert reply["ok"] is False and reply["code"] == "invalid", (msg, reply)
            assert reply["msg"].startswith("malformed message") and named in reply["msg"], (msg, reply)
        # Without a request id (stdin, ack) there is nobody to answer: dropped, the connection served on.
        c.send({"t": P.SANDBOX, "op": "stdin", "sandbox": "sb-x", "exec": "ex-1", "data": "not bytes"})
        c.send({"t": P.SANDBOX, "op": "ack", "sandbox": "sb-x", "exec": "ex-1", "fd": 1})
        assert c.request({"t": P.SERVER_STATUS})["ok"]
    assert escape.target.remote(3) == 6


def test_malformed_sandbox_operations_from_inside_a_container_get_a_clear_answer(escape):
    replies = escape.malformed_sandbox_ops.remote([msg for msg, _named in MALFORMED_SANDBOX_OPS])
    for (msg, named), reply in zip(MALFORMED_SANDBOX_OPS, replies):
        assert reply["ok"] is False and reply["code"] == "invalid", (msg, reply)
        assert named in reply["msg"], (msg, reply)
    assert escape.target.remote(4) == 8
