"""The bubblewrap view of a container whose host is read-only and whose /tmp is its own: what it runs
from (the runtime's packages, the user's code) stays in view, read-only, even under the host's /tmp."""

import os
import shutil

import pytest

from homeport.backends.local import _sandbox

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap (apt-get install bubblewrap)")


def _binds(argv: list[str]) -> list[tuple[str, str, str]]:
    return [(argv[i], argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a in ("--bind", "--ro-bind")]


def test_code_under_the_hosts_tmp_is_bound_back_read_only(tmp_path):
    pkg = tmp_path / "venv" / "site-packages" / "homeport"
    pkg.mkdir(parents=True)
    elsewhere = os.path.dirname(os.__file__)  # visible anyway: the host's directories, read-only
    argv = _sandbox.wrap(["true"], (), None, None, host_read_only=True, code=[str(pkg), elsewhere])
    tmpfs = argv.index("/tmp") - 1
    assert argv[tmpfs] == "--tmpfs"
    binds = _binds(argv)
    assert ("--ro-bind", str(pkg), str(pkg)) in binds
    assert argv.index(str(pkg)) > tmpfs  # over its own /tmp, not under it
    assert not any(src == elsewhere for _, src, _ in binds)
    assert not any(kind == "--bind" and src.startswith(str(tmp_path)) for kind, src, _ in binds)
