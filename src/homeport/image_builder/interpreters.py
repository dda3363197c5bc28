"""The Python interpreters on this machine that an image's `python_version` can be built from.

Images get no Python from the network: `debian_slim(python_version="3.12")` uses an interpreter
already here (the control plane's own, pyenv's, uv-managed ones, the system's), and a version with
none fails naming the versions there are.
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

MIN_VERSION = (3, 10)  # what Homeport's runtime needs

_PROBE = "import json, sys; print(json.dumps([list(sys.version_info[:3]), sys.implementation.name, sys.prefix != sys.base_prefix]))"


@dataclass(frozen=True)
class Interpreter:
    path: str
    version: tuple[int, int, int]
    implementation: str = "cpython"

    @property
    def version_str(self) -> str:
        return ".".join(map(str, self.version))

    def matches(self, wanted: str) -> bool:
        parts = tuple(int(x) for x in wanted.split("."))
        return self.version[: len(parts)] == parts


class NoInterpreter(LookupError):
    pass


def _candidates() -> list[str]:
    paths: list[str] = []
    base = getattr(sys, "_base_executable", None) or sys.executable
    paths.append(base)
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    paths += sorted(glob.glob(os.path.join(pyenv_root, "versions", "*", "bin", "python3.*")))
    uv_dir = os.environ.get("UV_PYTHON_INSTALL_DIR") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "uv", "python"
    )
    paths += sorted(glob.glob(os.path.join(uv_dir, "*", "bin", "python3.*")))
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if d and "shims" not in d and not d.startswith(sys.prefix):
            paths += sorted(glob.glob(os.path.join(d, "python3.*")))
    for d in ("/usr/local/bin", "/usr/bin"):
        paths += sorted(glob.glob(os.path.join(d, "python3.*")))
    out: list[str] = []
    seen: set[str] = set()
    for p in paths:
        if p != base and not re.fullmatch(r"python3\.\d+", os.path.basename(p)):
            continue
        if not os.access(p, os.X_OK) or os.path.isdir(p):
            continue
        real = os.path.realpath(p)
        if real in seen:
            continue
        seen.add(real)
        out.append(p)
    return out


def own_interpreter() -> Interpreter:
    """The interpreter this control plane runs on (the base one, when it runs in a virtualenv)."""
    path = getattr(sys, "_base_executable", None) or sys.executable
    return Interpreter(path, (sys.version_info.major, sys.version_info.minor, sys.version_info.micro), sys.implementation.name)


class Interpreters:
    """Probed once per control plane (each candidate runs for a few milliseconds), then kept."""

    def __init__(self) -> None:
        self._found: list[Interpreter] | None = None

    def all(self) -> list[Interpreter]:
        if self._found is None:
            self._found = self._probe()
        return self._found

    def _probe(self) -> list[Interpreter]:
        procs = []
        for path in _candidates():
            try:
                procs.append((path, subprocess.Popen([path, "-I", "-c", _PROBE], stdout=subprocess.PIPE,
                                                     stderr=subprocess.DEVNULL)))
            except OSError:
                continue
        found: list[Interpreter] = []
        for path, proc in procs:
            try:
                out, _ = proc.communicate(timeout=10)
                version, impl, is_venv = json.loads(out)
            except Exception:
                proc.kill()
                continue
            if impl != "cpython" or is_venv:
                continue
            found.append(Interpreter(path, tuple(version), impl))
        return found

    def find(self, wanted: str, usable: Usable | None = None) -> Interpreter:
        """The interpreter for `python_version` ("3.12" or "3.12.4") among those `usable` accepts (an
        image kind's own rule; any, when None); this process's own when it fits (found without
        probing the others)."""
        if tuple(int(x) for x in wanted.split(".")[:2]) < MIN_VERSION:
            raise NoInterpreter(self._missing(wanted, usable))
        ok = usable.accepts if usable is not None else _any
        own = own_interpreter()
        if own.matches(wanted) and ok(own):
            return own
        matching = [i for i in self.all() if i.matches(wanted) and ok(i)]
        if not matching:
            raise NoInterpreter(self._missing(wanted, usable))
        return max(matching, key=lambda i: i.version)

    def found_at_once(self, wanted: str) -> bool:
        """Whether `find(wanted)` answers without starting an interpreter (it probes them once per control plane)."""
        if self._found is not None:
            return True
        try:
            return own_interpreter().matches(wanted)
        except ValueError:  # not a version: `find` says so
            return False

    def _missing(self, wanted: str, usable: Usable | None) -> str:
        ok = usable.accepts if usable is not None else _any
        found = [i for i in self.all() if i.version[:2] >= MIN_VERSION]
        versions = sorted({i.version for i in found if ok(i)})
        available = ", ".join(".".join(map(str, v)) for v in versions) or "none"
        where = f" for {usable.images}" if usable is not None else ""
        if tuple(int(x) for x in wanted.split(".")[:2]) < MIN_VERSION:
            return (
                f"python_version={wanted!r} is older than Homeport's runtime supports "
                f"(Python {MIN_VERSION[0]}.{MIN_VERSION[1]} or newer). Available here{where}: {available}."
            )
        refused = sorted((i for i in found if i.matches(wanted) and not ok(i)), key=lambda i: i.version)
        why = ""
        if usable is not None and refused:
            why = " " + "; ".join(f"Python {i.version_str} at {i.path} {usable.why_not}" for i in refused) + "."
        if usable is None:
            install = (f"Install one (e.g. `uv python install {wanted}` or your distribution's "
                       f"python{'.'.join(wanted.split('.')[:2])} package)")
        else:
            install = f"Install one under its own directory (e.g. `uv python install {wanted}` or `pyenv install {wanted}`)"
        that = f" that {usable.images} can use" if usable is not None else ""
        return (
            f"No Python {wanted} interpreter on this machine{that} (Homeport does not download Python).{why} "
            f"Available here{where}: {available}. {install} or choose an available version."
        )


def _any(_interpreter: Interpreter) -> bool:
    return True


@dataclass(frozen=True)
class Usable:
    """Which interpreters an image kind can be built from, besides matching its version."""

    accepts: Callable[[Interpreter], bool]
    images: str  # the images this rule is for: "images with apt_install or run_commands"
    why_not: str  # follows "Python 3.11.2 at /usr/bin/python3.11" for one it refuses
