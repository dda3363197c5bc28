"""`homeport run`'s parsing of a function's parameters from the command line (no server)."""

from __future__ import annotations

import datetime
import typing
from pathlib import Path

import click
import pytest

from homeport.cli._run import NoParserAvailable, parse_cli_args
from homeport.exception import InvalidError


def test_scalar_types_flags_and_literals():
    def f(name: str, n: int, ratio: float, loud: bool = False, mode: typing.Literal["a", "b"] = "a",
          level: typing.Literal[1, 2] = 1, anything: typing.Any = "x", bare="d"):
        pass

    args = ["--name", "w", "--n", "3", "--ratio", "0.5", "--loud", "--mode", "b", "--level", "2", "--bare", "7"]
    assert parse_cli_args(f, args) == {"name": "w", "n": 3, "ratio": 0.5, "loud": True, "mode": "b", "level": 2,
                                       "anything": "x", "bare": "7"}


def test_datetime_from_iso_format():
    def f(d: datetime.datetime, maybe: datetime.datetime | None = None):
        pass

    got = parse_cli_args(f, ["--d", "2024-01-02T03:04:05", "--maybe", "2024-05-06"])
    assert got == {"d": datetime.datetime(2024, 1, 2, 3, 4, 5), "maybe": datetime.datetime(2024, 5, 6)}
    assert parse_cli_args(f, ["--d", "2024-01-02 03:04:05+02:00"])["d"].utcoffset() == datetime.timedelta(hours=2)
    with pytest.raises(click.BadParameter, match="not an ISO 8601 date and time"):
        parse_cli_args(f, ["--d", "yesterday"])


@pytest.mark.parametrize(
    ("annotation", "shown"),
    [(list[int], "list[int]"), (Path, "pathlib.Path"), (dict, "dict"), (typing.Union[int, str], "typing.Union[int, str]"),  # noqa: UP007
     (typing.Literal["a", 1], "typing.Literal['a', 1]")],
)
def test_an_unsupported_annotation_names_the_parameter_and_type(annotation, shown):
    def f(x):
        pass

    f.__annotations__ = {"x": annotation}
    with pytest.raises(NoParserAvailable) as info:
        parse_cli_args(f, ["--x", "1"])
    assert isinstance(info.value, InvalidError)
    assert f"Parameter `x` of 'f' is annotated `{shown}`" in str(info.value)
    assert "datetime.datetime" in str(info.value)  # says what would work
