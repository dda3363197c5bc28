"""What a template keeps in view when it isolates itself: the runtime's packages where they really are."""

from __future__ import annotations

import os

from homeport import _protocol as P
from homeport.runtime._template import _interpreter_paths


def test_the_runtime_packages_are_kept_where_their_links_point(tmp_path, monkeypatch):
    """The runtime path holds links to the control plane's own packages; when those live under the
    host's /tmp (a virtual environment there), an isolated template, whose /tmp is its own, must
    still see them, or it cannot import the rest of the runtime after it isolated itself."""
    real = tmp_path / "venv" / "site-packages" / "homeport"
    real.mkdir(parents=True)
    links = tmp_path / "runtime"
    links.mkdir()
    os.symlink(real, links / "homeport")
    monkeypatch.setenv(P.ENV_RUNTIME_PATH, str(links))
    assert str(real) in _interpreter_paths()
