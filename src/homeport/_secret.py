"""`Secret`: environment variables injected into a function's containers.

Secrets made from local data (`from_dict`, `from_local_environ`, `from_dotenv`) carry their values;
`from_name` only names a secret stored on the server, resolved when the app runs.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._names import object_name_problem
from ._protocol import ENV_IS_REMOTE
from .exception import InvalidError

__all__ = ["Secret", "check_object_name", "find_dotenv", "parse_dotenv"]

_ENV_DICT_WRONG_TYPE = "the env_dict argument to Secret has to be a dict[str, Union[str, None]]"


def check_object_name(name: Any, object_type: str) -> str:
    """Modal's rule for names of Apps, Secrets, Volumes, Dicts and Queues."""
    why = object_name_problem(name, object_type)
    if why is not None:
        raise InvalidError(why)
    return name


def _in_container() -> bool:
    return os.environ.get(ENV_IS_REMOTE) == "1"


class Secret:
    """Environment variables for a function's containers.

    ```python
    @app.function(secrets=[
        modal.Secret.from_name("openai"),               # stored on the server
        modal.Secret.from_dict({"MODE": "prod"}),        # values from this program
        modal.Secret.from_local_environ(["API_TOKEN"]),  # copied from your shell
        modal.Secret.from_dotenv(),                      # the nearest .env
    ])
    def f():
        ...
    ```
    """

    __slots__ = ("_environment_name", "_name", "_origin", "_required_keys", "_values")
    _origin: str
    _values: dict[str, str] | None
    _name: str | None
    _environment_name: str | None
    _required_keys: tuple[str, ...]

    def __init__(self) -> None:
        raise InvalidError(
            "Secret cannot be created directly; use Secret.from_name, Secret.from_dict, "
            "Secret.from_local_environ or Secret.from_dotenv."
        )

    @classmethod
    def _new(
        cls,
        origin: str,
        *,
        values: dict[str, str] | None = None,
        name: str | None = None,
        environment_name: str | None = None,
        required_keys: tuple[str, ...] = (),
    ) -> Secret:
        obj = object.__new__(cls)
        obj._origin = origin
        obj._values = values
        obj._name = name
        obj._environment_name = environment_name
        obj._required_keys = required_keys
        return obj

    # --- named constructors ---------------------------------------------------------------------

    @classmethod
    def from_dict(cls, env_dict: Mapping[str, str | None] | None = None) -> Secret:
        """A secret holding `env_dict`; keys whose value is None are left out."""
        if env_dict is None:
            env_dict = {}
        if not isinstance(env_dict, Mapping):
            raise InvalidError(_ENV_DICT_WRONG_TYPE)
        values = {k: v for k, v in env_dict.items() if v is not None}
        bad = [k for k, v in values.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise InvalidError(f"{_ENV_DICT_WRONG_TYPE}. Invalid keys: {bad!r}")
        return cls._new("from_dict", values=values)

    @classmethod
    def from_local_environ(cls, env_keys: Sequence[str]) -> Secret:
        """A secret copying `env_keys` from this process's environment, read now.

        Inside a container the keys are not looked up (the container already has them), so the
        module that defines the function imports there too.
        """
        if isinstance(env_keys, str) or not isinstance(env_keys, Sequence):
            raise InvalidError(
                f"`env_keys` must be a list of environment variable names, not {type(env_keys).__name__}"
            )
        bad = [k for k in env_keys if not isinstance(k, str)]
        if bad:
            raise InvalidError(f"`env_keys` must only contain strings. Invalid entries: {bad!r}")
        if _in_container():
            return cls._new("from_local_environ", values={})
        values = {}
        for key in env_keys:
            if key not in os.environ:
                raise InvalidError(
                    f"Could not find local environment variable '{key}' for Secret.from_local_environ"
                )
            values[key] = os.environ[key]
        return cls._new("from_local_environ", values=values)

    @classmethod
    def from_dotenv(cls, path: str | os.PathLike[str] | None = None, *, filename: str = ".env") -> Secret:
        """A secret holding the variables of the nearest `filename` (`.env`), read now.

        Like Modal, the search starts in the current working directory (or at `path`: a directory, or
        a file whose directory is the start, so `from_dotenv(__file__)` finds the `.env` beside your
        script) and goes up through its parents. When none is found the secret is empty, as on Modal,
        and a warning says where it looked.

        ```python
        @app.function(secrets=[modal.Secret.from_dotenv(__file__)])
        def f():
            print(os.environ["USERNAME"])
        ```
        """
        if not isinstance(filename, str) or not filename:
            raise InvalidError(f"`filename` must be a file name (like '.env'), not {filename!r}")
        start = Path(os.getcwd() if path is None else os.fspath(path)).expanduser().absolute()
        if not start.exists():
            if _in_container():  # the path was on the machine that deployed the app
                return cls._new("from_dotenv", values={})
            raise InvalidError(f"Secret.from_dotenv: the starting path {str(start)!r} does not exist.")
        dotenv_path = find_dotenv(start, filename)
        if dotenv_path is None:
            if not _in_container():  # in a container the values come through the environment
                warnings.warn(
                    f"Secret.from_dotenv found no {filename} file in {start if start.is_dir() else start.parent} "
                    "or its parents; the secret is empty.",
                    UserWarning,
                    stacklevel=2,
                )
            return cls._new("from_dotenv", values={})
        try:
            text = dotenv_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidError(f"Secret.from_dotenv could not read {str(dotenv_path)!r}: {exc}") from None
        return cls._new("from_dotenv", values=parse_dotenv(text, source=str(dotenv_path)))

    @classmethod
    def from_name(
        cls,
        name: str,
        *,
        environment_name: str | None = None,
        required_keys: Sequence[str] = (),
    ) -> Secret:
        """A reference to a secret stored on the server; it is resolved when the app runs."""
        check_object_name(name, "Secret")
        if environment_name is not None and not isinstance(environment_name, str):
            raise InvalidError(f"`environment_name` must be a string, not {type(environment_name).__name__}")
        if isinstance(required_keys, str) or not all(isinstance(k, str) for k in required_keys):
            raise InvalidError("`required_keys` must be a list of strings")
        return cls._new(
            "from_name", name=name, environment_name=environment_name, required_keys=tuple(required_keys)
        )

    # --- properties -----------------------------------------------------------------------------

    @property
    def name(self) -> str | None:
        """The stored secret's name for `from_name`; None for secrets made from local values."""
        return self._name

    @property
    def environment_name(self) -> str | None:
        return self._environment_name

    @property
    def required_keys(self) -> tuple[str, ...]:
        return self._required_keys

    @property
    def local_values(self) -> dict[str, str] | None:
        """A copy of the values for secrets made locally; None for `from_name`."""
        return None if self._values is None else dict(self._values)

    @property
    def is_local(self) -> bool:
        return self._values is not None

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this secret in a content hash, without its values."""
        if self._values is None:
            return {"name": self._name, "environment_name": self._environment_name}
        return {"keys": sorted(self._values)}

    def __repr__(self) -> str:
        if self._values is None:
            extra = f", environment_name={self._environment_name!r}" if self._environment_name else ""
            return f"Secret.from_name({self._name!r}{extra})"
        # Values never appear here: reprs end up in logs and tracebacks.
        return f"Secret.{self._origin}(keys={sorted(self._values)!r})"


# --- .env files ------------------------------------------------------------------------------------


def find_dotenv(start: Path, filename: str = ".env") -> Path | None:
    """The first `filename` in `start` (or, for a file, its directory) and then its parents, like
    python-dotenv's `find_dotenv`; None when there is none."""
    directory = start if start.is_dir() else start.parent
    for d in (directory, *directory.parents):
        candidate = d / filename
        if candidate.is_file():
            return candidate
    return None


_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DOUBLE_QUOTE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def parse_dotenv(text: str, *, source: str = ".env") -> dict[str, str]:
    """Parse `.env` text: `KEY=VALUE` lines, `export ` prefixes, comments, quotes, `${VAR}` expansion.

    Single-quoted values are literal; double-quoted values understand backslash escapes and may span
    lines; `${VAR}` and `${VAR:-default}` expand (outside single quotes) from earlier keys, then from
    the process environment. A line that is just `KEY` sets nothing.
    """
    values: dict[str, str] = {}
    pos, line_no, n = 0, 1, len(text)

    def fail(message: str) -> InvalidError:
        return InvalidError(f"Could not parse {source} line {line_no}: {message}")

    def expand(raw: str) -> str:
        def sub(m: re.Match[str]) -> str:
            key, default = m.group(1), m.group(2)
            found = values.get(key, os.environ.get(key))
            return found if found else (default or "")

        return _VARIABLE.sub(sub, raw)

    while pos < n:
        end = text.find("\n", pos)
        end = n if end == -1 else end
        line = text[pos:end].strip()
        if not line or line.startswith("#"):
            pos, line_no = end + 1, line_no + 1
            continue
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[len("export") :].lstrip()
        key_match = _KEY.match(line)
        if not key_match:
            raise fail(f"expected KEY=VALUE, got {line!r}")
        key = key_match.group(0)
        rest = line[key_match.end() :].lstrip()
        if not rest or rest.startswith("#"):
            pos, line_no = end + 1, line_no + 1
            continue
        if not rest.startswith("="):
            raise fail(f"expected '=' after {key!r}")
        rest = rest[1:].lstrip()
        if rest[:1] in ("'", '"'):
            quote = rest[0]
            # The value may run past this line: scan the raw text from the opening quote.
            # Keys, `export` and `=` hold no quotes, so the first quote on the line opens the value.
            start = text.index(quote, pos) + 1
            i, chunk = start, []
            while True:
                if i >= n:
                    raise fail(f"unterminated {quote} quote in the value of {key!r}")
                ch = text[i]
                if ch == quote:
                    break
                if quote == '"' and ch == "\\" and i + 1 < n:
                    nxt = text[i + 1]
                    chunk.append(_DOUBLE_QUOTE_ESCAPES.get(nxt, "\\" + nxt))
                    i += 2
                    continue
                chunk.append(ch)
                i += 1
            value = "".join(chunk)
            if quote == '"':
                value = expand(value)
            line_no += text.count("\n", pos, i)
            after_end = text.find("\n", i)
            after_end = n if after_end == -1 else after_end
            trailing = text[i + 1 : after_end].strip()
            if trailing and not trailing.startswith("#"):
                raise fail(f"unexpected text after the closing quote of {key!r}: {trailing!r}")
            pos, line_no = after_end + 1, line_no + 1
        else:
            # An unquoted value ends at a ` #` comment.
            comment = re.search(r"\s#", rest)
            value = expand((rest[: comment.start()] if comment else rest).strip())
            pos, line_no = end + 1, line_no + 1
        values[key] = value
    return values
