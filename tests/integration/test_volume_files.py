"""Files in a volume handled from the client and the CLI, no container involved."""

import os

import modal
import pytest

from homeport.exception import InvalidError
from homeport.testing import homeport_cli

pytestmark = pytest.mark.integration

BIG = 2 * (1 << 20) + 12345  # more than two of the chunks a file is read in


def _tree(root):
    """{relative path: bytes} of the files under `root`, and its directories (as None)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = None
        for f in filenames:
            with open(os.path.join(dirpath, f), "rb") as fh:
                out[os.path.relpath(os.path.join(dirpath, f), root)] = fh.read()
    return out


@pytest.fixture
def volume(platform, request):
    name = f"files-{request.node.name[5:30].replace('_', '-')}"
    vol = modal.Volume.from_name(name, create_if_missing=True)
    with vol.batch_upload(force=True) as batch:
        batch.put_file(_bytes(b"a"), "/models/a.txt")
        batch.put_file(_bytes(os.urandom(BIG)), "/models/sub/big.bin")
        batch.put_file(_bytes(b"top"), "/top.txt")
    try:
        yield name, vol
    finally:
        modal.Volume.delete(name)


def _bytes(data):
    import io

    return io.BytesIO(data)


def test_copy_files_copies_a_directory_only_when_recursive(volume):
    _name, vol = volume
    with pytest.raises(InvalidError, match=r"/models is a directory; pass recursive=True"):
        vol.copy_files(["/top.txt", "/models"], "/backup/")
    assert "backup" not in {e.path for e in vol.listdir("/")}  # nothing copied, not even the file before it
    vol.copy_files(["/models"], "/backup", recursive=True)  # like `cp -r models backup`
    copied = {e.path: e.type for e in vol.listdir("/backup", recursive=True)}
    assert copied == {"backup/a.txt": "file", "backup/sub": "directory", "backup/sub/big.bin": "file"}
    assert b"".join(vol.read_file("/backup/sub/big.bin")) == b"".join(vol.read_file("/models/sub/big.bin"))
    vol.copy_files(["/top.txt"], "/backup/")  # a file needs no recursive=True
    assert b"".join(vol.read_file("/backup/top.txt")) == b"top"


def test_read_file_streams_a_big_file_in_chunks(volume):
    _name, vol = volume
    chunks = list(vol.read_file("/models/sub/big.bin"))
    assert len(chunks) == 3 and sum(map(len, chunks)) == BIG


def test_cli_get_downloads_a_directory_recursively(volume, tmp_path):
    name, vol = volume
    expected = {"a.txt": b"a", "sub": None, "sub/big.bin": b"".join(vol.read_file("/models/sub/big.bin"))}

    out = homeport_cli("volume", "get", name, "/models", str(tmp_path / "dl"))  # a new directory: the tree itself
    assert out.returncode == 0, out.stderr
    assert _tree(tmp_path / "dl") == expected
    assert "Wrote 2 files" in out.stdout

    into = tmp_path / "into"
    into.mkdir()
    out = homeport_cli("volume", "get", name, "/models/", str(into))  # an existing directory: under its name
    assert out.returncode == 0, out.stderr
    assert _tree(into / "models") == expected

    out = homeport_cli("volume", "get", name, "/models", str(into))  # nothing is overwritten unasked
    assert out.returncode != 0
    assert "already exists" in out.stderr and "--force" in out.stderr
    (into / "models" / "a.txt").write_bytes(b"edited here")
    out = homeport_cli("volume", "get", name, "/models", str(into), "--force")
    assert out.returncode == 0, out.stderr
    assert _tree(into / "models") == expected

    out = homeport_cli("volume", "get", name, "/", str(tmp_path / "all"))  # the whole volume
    assert out.returncode == 0, out.stderr
    assert set(_tree(tmp_path / "all")) == {"top.txt", "models", "models/a.txt", "models/sub", "models/sub/big.bin"}

    out = homeport_cli("volume", "get", name, "/top.txt", str(into))  # a file into a directory
    assert out.returncode == 0, out.stderr
    assert (into / "top.txt").read_bytes() == b"top"
    assert homeport_cli("volume", "get", name, "/models/a.txt", "-").stdout == "a"


def test_cli_get_of_a_missing_path_says_so(volume, tmp_path):
    name, _vol = volume
    out = homeport_cli("volume", "get", name, "/nope", str(tmp_path / "x"))
    assert out.returncode != 0
    assert "No such file or directory" in out.stderr and "/nope" in out.stderr
    assert not (tmp_path / "x").exists()
