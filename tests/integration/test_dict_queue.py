"""`modal.Dict` and `modal.Queue` with Modal's semantics, end to end."""

import os
import queue
import subprocess
import sys
import textwrap
from pathlib import Path

import modal
import pytest

from homeport import _pickle
from homeport import _protocol as P
from homeport._protocol import dictqueue as D
from homeport.exception import DeserializationError, InvalidError, NotFoundError, RequestSizeError
from homeport.testing import Platform, homeport_cli, running, wait_for

pytestmark = pytest.mark.integration

PROGRAMS = Path(__file__).parent / "programs"


def test_job_queue_program_runs_unchanged(platform):
    out = homeport_cli("run", str(PROGRAMS / "job_queue.py"), "--n", "30", "--workers", "3", timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "JOB QUEUE OK 30 jobs" in out.stdout


def test_aio_forms(platform):
    out = homeport_cli("run", str(PROGRAMS / "dict_queue_aio.py"), timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "AIO OK" in out.stdout


def test_modal_module_paths():
    from homeport.dict import Dict
    from homeport.queue import Queue

    assert Dict is modal.Dict and Queue is modal.Queue
    with pytest.raises(RuntimeError, match=r"Please use `Dict\.from_name"):
        modal.Dict()
    for bad in ("a/b", "x" * 65, ""):
        with pytest.raises(InvalidError, match="Invalid Queue name"):
            modal.Queue.from_name(bad)


def test_queue_semantics(platform):
    with modal.Queue.ephemeral() as q:
        assert q.get(block=False) is None
        with pytest.raises(queue.Empty):
            q.get(timeout=0.2)
        with pytest.raises(queue.Empty):
            q.get_many(3, timeout=0)
        assert q.get_many(3, block=False) == []
        q.put_many(["a", "b", "c"])
        q.put("p1", partition="p")
        assert q.len() == 3 and q.len(partition="p") == 1 and q.len(total=True) == 4
        assert list(q.iterate()) == ["a", "b", "c"]  # reads without removing
        assert q.get_many(2) == ["a", "b"]
        assert q.get(partition="p") == "p1"
        q.clear()
        assert q.len(total=True) == 0
        with pytest.raises(InvalidError, match="between 1 and 64"):
            q.put(1, partition="x" * 65)
        with pytest.raises(InvalidError, match="between 1 and 64"):
            q.put(1, partition="")
        with pytest.raises(InvalidError):
            q.len(partition="p", total=True)
        with pytest.raises(InvalidError):
            q.clear(partition="p", all=True)
        with pytest.raises(RequestSizeError, match=r"Queue\.put request is too large"):
            q.put(b"x" * (1 << 20))


def test_full_partition_raises_queue_full(platform):
    with modal.Queue.ephemeral() as q:
        q.put_many(list(range(5000)))
        with pytest.raises(queue.Full):
            q.put("one more", block=False)
        with pytest.raises(queue.Full):
            q.put("one more", timeout=0.2)
        q.put("elsewhere", partition="other")  # another partition has room
        assert q.get() == 0
        q.put("now it fits", block=False)
        assert q.len() == 5000


def test_blocking_get_is_answered_by_a_put_from_another_client(platform, tmp_path):
    """A get waits on the control plane; a put from another process wakes it."""
    q = modal.Queue.from_name("dq-wake", create_if_missing=True)
    q.clear()
    script = tmp_path / "putter.py"
    script.write_text(textwrap.dedent("""
        import time, homeport as modal
        time.sleep(0.5)
        modal.Queue.from_name("dq-wake").put("woken")
    """))
    proc = subprocess.Popen([sys.executable, str(script)])
    try:
        assert q.get(timeout=60) == "woken"
    finally:
        proc.wait(timeout=60)
    modal.Queue.objects.delete("dq-wake")


def test_a_cancelled_get_does_not_swallow_the_next_item(platform):
    """`asyncio.wait_for(q.get.aio(), ...)` gives up; the item put afterwards goes to the next get."""
    import asyncio

    with modal.Queue.ephemeral() as q:

        async def give_up() -> None:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(q.get.aio(), 0.3)

        asyncio.run(give_up())
        q.put("kept")
        assert q.get(timeout=30) == "kept"


def test_an_interrupted_blocking_get_does_not_swallow_the_next_item(platform, tmp_path):
    """Ctrl-C in a blocking `q.get()`: the process goes on, and the item put afterwards is still there."""
    import signal
    import time

    q = modal.Queue.from_name("dq-sigint", create_if_missing=True)
    q.clear()
    script = tmp_path / "interrupted.py"
    script.write_text(textwrap.dedent("""
        import sys, homeport as modal
        q = modal.Queue.from_name("dq-sigint")
        q.len()
        print("ready", flush=True)
        try:
            q.get()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        sys.stdin.readline()
        print("got", q.get(timeout=30), flush=True)
    """))
    with subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True) as proc:
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(0.5)  # let the get reach the control plane and wait there
            proc.send_signal(signal.SIGINT)
            assert proc.stdout.readline().strip() == "interrupted"
            q.put("kept")
            assert q.len() == 1
            proc.stdin.write("\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "got kept"
        finally:
            proc.kill()
    modal.Queue.objects.delete("dq-sigint")


def test_dict_semantics(platform):
    with modal.Dict.ephemeral() as d:
        assert d.get("missing") is None and d.get("missing", 3) == 3
        with pytest.raises(KeyError):
            d["missing"]
        with pytest.raises(KeyError):
            d.pop("missing")
        assert d.pop("missing", "default") == "default"
        d["k"] = [1, 2]
        assert d.put("k", "other", skip_if_exists=True) is False
        assert d.put(("tuple", 1), {"nested": True}) is True
        d.update({"a": 1}, b=2)
        assert d["k"] == [1, 2] and d[("tuple", 1)] == {"nested": True}
        assert "a" in d and d.contains("b") and "zz" not in d
        assert d.len() == 4
        assert sorted(map(repr, d.keys())) == sorted(map(repr, ["k", ("tuple", 1), "a", "b"]))
        assert sorted(map(repr, d.values())) == sorted(map(repr, [[1, 2], {"nested": True}, 1, 2]))
        assert dict(d.items())["a"] == 1
        del d["a"]
        assert d.pop("b") == 2 and d.len() == 2
        d.clear()
        assert d.len() == 0 and list(d.items()) == []


def test_objects_create_list_delete_and_from_id(platform):
    modal.Dict.objects.create("dq-objects")
    with pytest.raises(modal.exception.AlreadyExistsError):
        modal.Dict.objects.create("dq-objects")
    modal.Dict.objects.create("dq-objects", allow_existing=True)
    d = modal.Dict.from_name("dq-objects")
    d["x"] = 1
    info = d.info()
    assert info.name == "dq-objects" and info.created_at.year >= 2024
    assert modal.Dict.from_id(d.object_id)["x"] == 1
    assert "dq-objects" in [o.name for o in modal.Dict.objects.list()]
    assert "dq-objects" not in [o.name for o in modal.Queue.objects.list()]
    modal.Dict.objects.delete("dq-objects")
    with pytest.raises(NotFoundError):
        modal.Dict.from_name("dq-objects").get("x")
    with pytest.raises(NotFoundError):
        modal.Dict.objects.delete("dq-objects")
    modal.Dict.objects.delete("dq-objects", allow_missing=True)
    with pytest.raises(NotFoundError):
        modal.Queue.from_id("qu-doesnotexist").len()


def test_ephemeral_objects_are_deleted_with_their_block_and_their_client(platform, tmp_path):
    with modal.Queue.ephemeral() as q:
        q.put(1)
        oid = q.object_id
        assert modal.Queue.from_id(oid).len() == 1
    with pytest.raises(NotFoundError):
        modal.Queue.from_id(oid).len()
    # A client that dies inside the block: its objects go with its connection.
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent("""
            import os, homeport as modal
            ctx = modal.Dict.ephemeral()
            d = ctx.__enter__()
            d["k"] = "v"
            print(d.object_id, flush=True)
            os._exit(0)
        """)],
        capture_output=True, text=True, timeout=60,
    )
    oid = out.stdout.strip()
    assert oid.startswith("di-"), out.stderr

    def gone() -> bool:
        try:
            modal.Dict.from_id(oid).len()
        except NotFoundError:
            return True
        return False

    assert wait_for(gone, timeout=30)


def test_named_objects_persist_across_a_control_plane_restart(tmp_path):
    with Platform(str(tmp_path / "p")) as p:
        d = modal.Dict.from_name("dq-persist", create_if_missing=True)
        d["model"] = {"epoch": 3}
        q = modal.Queue.from_name("dq-persist", create_if_missing=True)
        q.put_many([1, 2])
        q.put("x", partition="part")
        with modal.Queue.ephemeral() as eph:
            eph_id = eph.object_id
            p.restart()
        d2 = modal.Dict.from_name("dq-persist")
        assert d2["model"] == {"epoch": 3} and d2.object_id == d.object_id
        q2 = modal.Queue.from_name("dq-persist")
        assert q2.get_many(5) == [1, 2] and q2.get(partition="part") == "x"
        with pytest.raises(NotFoundError):
            modal.Queue.from_id(eph_id).len()
        # Nothing became a path: the state directory holds no file named after an object.
        modal.Dict.from_name("..", create_if_missing=True)["k"] = 1
        assert modal.Dict.from_name("..")["k"] == 1
        names = {f.name for f in Path(p.state_dir).rglob("*")}
        assert not names & {"dq-persist", ".."}


def test_cli_commands(platform):
    def cli(*args):
        out = homeport_cli(*args)
        assert out.returncode == 0, (args, out.stdout, out.stderr)
        return out.stdout

    cli("dict", "create", "dq-cli")
    cli("queue", "create", "dq-cli-q")
    assert "dq-cli" in cli("dict", "list")
    assert [r["Name"] for r in __import__("json").loads(cli("queue", "list", "--json"))].count("dq-cli-q") == 1
    d = modal.Dict.from_name("dq-cli")
    d["greeting"] = "hello"
    d[7] = "seven"
    assert cli("dict", "get", "dq-cli", "greeting").strip() == "hello"
    items = cli("dict", "items", "dq-cli", "--all", "--repr")
    assert "'greeting'" in items and "'hello'" in items and "7" in items
    q = modal.Queue.from_name("dq-cli-q")
    q.put_many(["first", "second"])
    q.put("p", partition="part")
    assert cli("queue", "len", "dq-cli-q").strip() == "2"
    assert cli("queue", "len", "dq-cli-q", "--total").strip() == "3"
    assert cli("queue", "peek", "dq-cli-q", "5").split() == ["first", "second"]
    assert cli("queue", "peek", "dq-cli-q", "-p", "part").split() == ["p"]
    cli("queue", "clear", "dq-cli-q", "-p", "part", "--yes")
    assert q.len(total=True) == 2
    cli("queue", "clear", "dq-cli-q", "--all", "--yes")
    assert q.len(total=True) == 0
    cli("dict", "clear", "dq-cli", "--yes")
    assert d.len() == 0
    cli("dict", "delete", "dq-cli", "--yes")
    cli("queue", "delete", "dq-cli-q", "--yes")
    assert "dq-cli" not in cli("dict", "list")
    out = homeport_cli("queue", "delete", "dq-cli-q", "--yes")
    assert out.returncode == 1 and "not found" in out.stderr
    assert homeport_cli("queue", "delete", "dq-cli-q", "--yes", "--allow-missing").returncode == 0


def test_undecodable_values_raise_deserialization_error(platform):
    """The control plane stores bytes: what one client put, another reads back as it was."""
    with modal.Dict.ephemeral() as d:
        from homeport._bridge import run_sync
        from homeport._stored_object import _request

        run_sync(_request(P.DICT, D.DictPut(oid=d.object_id, key=_pickle.dumps("k"), value=b"not a pickle")))
        with pytest.raises(DeserializationError):
            d["k"]


# --- what a container's credentials reach, by crafted messages --------------------------------------
@pytest.fixture(scope="module")
def container_creds(platform, apps_path):
    with running("trust") as trust:
        yield trust.credentials.remote()


def test_container_credentials_reach_what_modal_allows(platform, container_creds):
    from test_access import _Raw

    cid, token, _app_id = container_creds
    named = modal.Dict.from_name("dq-workspace", create_if_missing=True)
    named["secret"] = "shared"
    with modal.Queue.ephemeral() as mine:
        mine.put("client item")
        with _Raw(platform, {"cid": cid, "ctoken": token}) as c:
            # Named objects are workspace-global (as in Modal): found by name, read and written.
            found = c.request({"t": P.DICT, "op": "lookup", "name": "dq-workspace"})
            assert found["ok"] and found["v"]["object_id"] == named.object_id
            got = c.request({"t": P.DICT, "op": "get", "oid": named.object_id, "key": _pickle.dumps("secret")})
            assert got["ok"] and got["v"][0] is True
            # Listing and deleting are refused.
            for msg in ({"t": P.DICT, "op": "list"}, {"t": P.QUEUE, "op": "list"},
                        {"t": P.DICT, "op": "delete", "oid": named.object_id},
                        {"t": P.QUEUE, "op": "delete", "oid": mine.object_id}):
                reply = c.request(msg)
                assert reply["ok"] is False and reply["code"] == "auth", (msg, reply)
            # An ephemeral object is reachable only by its (unguessable) id; releasing another's is a no-op.
            assert c.request({"t": P.QUEUE, "op": "release", "oid": mine.object_id})["ok"]
            assert c.request({"t": P.QUEUE, "op": "by_id", "oid": "qu-" + "a" * 22})["code"] == "not_found"
            # A dict id is not a queue; path-like names are refused; '..' is only a name.
            assert c.request({"t": P.QUEUE, "op": "len", "oid": named.object_id})["code"] == "not_found"
            for bad in ("../../etc/passwd", "a/b", "x" * 65):
                assert c.request({"t": P.DICT, "op": "lookup", "name": bad, "create_if_missing": True})["code"] == "invalid"
            dots = c.request({"t": P.DICT, "op": "lookup", "name": "..", "create_if_missing": True})
            assert dots["ok"] and dots["v"]["name"] == ".."
            # Unpickled values are never interpreted by the control plane.
            assert c.request({"t": P.QUEUE, "op": "put", "oid": mine.object_id, "values": ["not bytes"]})["code"] == "invalid"
        assert mine.get(block=False) == "client item"  # still there: the release did nothing
    assert named["secret"] == "shared"
    modal.Dict.objects.delete("dq-workspace")
    modal.Dict.objects.delete("..")
    assert os.path.exists(platform.state_dir)
