"""What the CLI says where it cannot do what was asked (no server): a clear error, never a traceback
from deep inside (a missing module, an attribute of None)."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from homeport.cli._modal import modal_cli
from homeport.cli._run import import_program
from homeport.exception import UnimplementedError


def test_a_file_python_cannot_import_is_named(tmp_path: Path):
    program = tmp_path / "app.txt"
    program.write_text("import modal\n")
    with pytest.raises(click.ClickException, match="Not a Python file"):
        import_program(str(program), False)


def test_modal_server_info_says_it_is_not_built():
    result = CliRunner().invoke(modal_cli, ["server", "info", "my-app", "my-server"])
    assert isinstance(result.exception, UnimplementedError), result.output
    assert "modal server info my-app my-server" in str(result.exception)
