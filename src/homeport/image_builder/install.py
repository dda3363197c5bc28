"""The uv layer: an image's virtual environment (`debian_slim`) and the packages installed into it.

Packages are installed with uv into the image's own environment, which never sees the control plane's
or the caller's site-packages. An install asked for from inside a container (a sandbox's image) runs
in a build container of the backend instead of on this machine (`_install_confined`).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
from pathlib import Path
from typing import Any

from ..backends import Mount
from .built import base_environ, outermost
from .commands import INSTALL_TIMEOUT, LogFn, RunContainer, Tail, run_command, tail_text
from .errors import ImageBuildFailed, ImageUnsupported
from .runtime import PTH_LINE, PTH_NAME

# Interpreter settings of the control plane's own environment that must not reach the build tools.
_INTERPRETER_VARS = frozenset({
    "PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONSTARTUP", "PYTHONEXECUTABLE", "VIRTUAL_ENV",
    "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "__PYVENV_LAUNCHER__", "PYTHONNOUSERSITE",
})


def tool_env(meta: dict[str, Any] | None = None, step: dict[str, Any] | None = None) -> dict[str, str]:
    """The environment of a build tool run on this machine: the control plane's, without its
    interpreter's settings and Homeport's own variables, plus the image's and the step's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMEPORT_") and k not in _INTERPRETER_VARS}
    env["UV_PYTHON_DOWNLOADS"] = "never"
    env["UV_NO_PROGRESS"] = "1"
    if meta:
        env.update(meta.get("env") or {})
    if step:
        env.update(step.get("env") or {})
        env.update(step.get("_secret_env") or {})
    return env


class UvInstaller:
    """Runs uv: the one given, else the `uv` package's, else the one on PATH (found when first needed)."""

    def __init__(self, uv_bin: str | None = None) -> None:
        self._uv = uv_bin

    @property
    def uv(self) -> str:
        if self._uv is None:
            try:
                from uv import find_uv_bin

                self._uv = find_uv_bin()
            except (ImportError, FileNotFoundError):
                found = shutil.which("uv")
                if found is None:
                    raise ImageUnsupported(
                        "Building images needs uv: install the `uv` package into the control plane's "
                        "environment (`pip install uv`)."
                    ) from None
                self._uv = found
        return self._uv

    async def base_layer(self, step: dict[str, Any], tmp: Path, out: LogFn) -> None:
        """A new environment of the step's interpreter under `tmp/venv`, with the runtime's `.pth` file."""
        interp = step["interpreter"]
        out(f"Python {interp['version']} from {interp['path']}", 1)
        venv = tmp / "venv"
        await run_command([self.uv, "venv", "--quiet", "--relocatable", "--no-config", "--python", interp["path"],
                           str(venv)], out, "uv venv", env=tool_env())
        site = await _site_packages(venv)
        (Path(site) / PTH_NAME).write_text(PTH_LINE)

    async def install(self, step: dict[str, Any], tmp: Path, meta: dict[str, Any], out: LogFn,
                      run_container: RunContainer | None) -> None:
        kind = step["kind"]
        python = str(tmp / "venv" / "bin" / "python")
        args = [self.uv, "pip", "install", "--python", python, *_index_args(step)]
        if kind == "uv_pip_install" and step.get("uv_version"):
            out(f"note: uv_version={step['uv_version']!r} asked for; building with the control plane's uv", 2)
        if kind in ("pip_install", "uv_pip_install"):
            args += list(step.get("packages") or ())
            for req in step.get("requirements") or ():
                args += ["-r", req]
        elif kind == "pip_install_from_requirements":
            args += ["-r", step["requirements_txt"]]
        elif kind == "pip_install_from_pyproject":
            args += ["-r", step["pyproject_toml"]]
            for extra in step.get("optional_dependencies") or ():
                args += ["--extra", extra]
        if step.get("_confined"):
            await _install_confined(args, tmp, meta, step, out, run_container)
        else:
            await run_command(args, out, "uv pip install", env=tool_env(meta, step), timeout=INSTALL_TIMEOUT)


async def _site_packages(venv: Path) -> str:
    libs = sorted((venv / "lib").glob("python3.*/site-packages"))
    if not libs:
        raise ImageBuildFailed(f"the new environment has no site-packages under {venv}/lib")
    return str(libs[0])


def _index_args(step: dict[str, Any]) -> list[str]:
    args: list[str] = []
    if step.get("index_url"):
        args += ["--index-url", step["index_url"]]
    if step.get("extra_index_url"):
        args += ["--extra-index-url", step["extra_index_url"]]
    if step.get("find_links"):
        args += ["--find-links", step["find_links"]]
    if step.get("pre"):
        args += ["--prerelease", "allow"]
    if step.get("extra_options"):
        args += shlex.split(step["extra_options"])
    return args


async def _install_confined(args: list[str], tmp: Path, meta: dict[str, Any], step: dict[str, Any], out: LogFn,
                            run_container: RunContainer | None) -> None:
    """`uv pip install` for an image that code in a container asked for (a sandbox's image): in a build
    container of the backend, like run_function, not on this machine. A package's build, a `.pth` file
    of an earlier step or the image's `env` then act on the layer being built and nothing else: the
    host is read-only there and the state directory hidden. Its environment is the allowlisted base
    one, the index settings of this machine (`UV_*`, `PIP_*`: the same packages as any build), the
    image's and the step's; its download cache is its own, removed after."""
    if run_container is None:
        raise ImageUnsupported("a pip install asked for from inside a container runs in a build container, "
                               "and this control plane's backend cannot run one")
    cache = tmp / ".uv-cache"
    env = base_environ(os.environ)
    env.update({k: v for k, v in os.environ.items() if k.startswith(("UV_", "PIP_"))})
    env.update({"UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1", "UV_CACHE_DIR": str(cache),
                **(meta.get("env") or {}), **(step.get("env") or {}), **(step.get("_secret_env") or {})})
    interpreter = os.path.dirname(os.path.dirname(os.path.realpath(meta["python"]["path"])))  # noqa: ASYNC240
    uv = os.path.dirname(os.path.realpath(args[0]))  # noqa: ASYNC240 - two paths, no I/O worth a thread
    mounts = [Mount(str(tmp), str(tmp), read_only=False)]
    mounts += [Mount(p, p, read_only=True) for p in outermost([interpreter, uv])]
    tail = Tail(out)
    try:
        code = await run_container(args, env, None, mounts, tail, INSTALL_TIMEOUT, None)
    finally:
        await asyncio.to_thread(shutil.rmtree, cache, True)
    if code is None:
        raise ImageBuildFailed(f"uv pip install did not finish within {INSTALL_TIMEOUT:g}s{tail_text(tail.lines)}")
    if code != 0:
        raise ImageBuildFailed(f"uv pip install exited with code {code}{tail_text(tail.lines)}")
