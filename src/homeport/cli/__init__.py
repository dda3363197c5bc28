"""The `homeport` command line: thin, it parses arguments and calls the SDK or starts the server."""

from ._main import cli, main

__all__ = ["cli", "main"]
