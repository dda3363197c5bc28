"""Build steps that run code in a build container of the backend, never on this machine.

`apt_install` and `run_commands` run in the image's own Debian root file system (`rootfs`), whose
writes become the layer (an overlay upper directory); `run_function` runs there too when the image has
one, else with the host read-only, so what the function writes lands in the image or fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

from .. import _protocol as P
from ..backends import Mount
from .built import BuiltImage, existing_outermost, outermost, runtime_dirs
from .commands import INSTALL_TIMEOUT, LogFn, RunContainer, Tail, read_only_hint, run_command, tail_text
from .errors import ImageBuildFailed, ImageUnsupported
from .rootfs import DEBIAN_PATH, DebianBase, RootfsUnavailable, interpreter_prefix


class SandboxedSteps:
    """The steps of one builder (its `layers` directory, Debian base and runtime) that need a build container."""

    def __init__(self, layers: Path, debian: DebianBase, run_container: RunContainer | None,
                 runtime_path: Callable[[], str]) -> None:
        self.layers = layers
        self.debian = debian
        self.run_container = run_container
        self.runtime_path = runtime_path

    async def rootfs_step(self, step: dict[str, Any], key: str, tmp: Path, meta: dict[str, Any], out: LogFn) -> None:
        """apt_install, run_commands, or run_function of an image with a root file system: run in the
        image's root file system, whose writes become this layer (an overlay upper directory)."""
        kind = step["kind"]
        if self.run_container is None:
            raise ImageUnsupported(_needs_rootfs(kind, "this control plane's backend cannot run build steps"))
        try:
            base = await self.debian.ensure(run_command, out)
            prefix = interpreter_prefix(meta["python"]["path"])
        except RootfsUnavailable as exc:
            raise ImageUnsupported(_needs_rootfs(kind, str(exc))) from None
        rootfs = dict(meta.get("rootfs") or {"base": str(base), "uppers": [], "interpreter_prefix": prefix})
        upper, work, scratch = tmp / "rootfs", tmp / ".work", tmp / ".mnt"
        for d in (upper, work, scratch):
            d.mkdir()
        venv = str(tmp / "venv")
        env = {"PATH": os.path.join(venv, "bin") + os.pathsep + DEBIAN_PATH, "HOME": "/root", "LANG": "C.UTF-8",
               "DEBIAN_FRONTEND": "noninteractive", "VIRTUAL_ENV": venv, **(meta.get("env") or {}),
               **(step.get("env") or {}), **(step.get("_secret_env") or {})}
        mounts = [Mount(prefix, prefix, read_only=True), Mount(str(tmp), str(tmp), read_only=False)]
        files_from = self.layers / meta["files_from"] if meta["files_from"] != key else tmp
        mounts += [Mount(str(files_from / "fs" / t.lstrip("/")), t, read_only=True) for t in meta.get("fs_targets", ())]
        cwd = meta.get("workdir") or "/"
        if kind == "apt_install":
            pkgs = shlex.join(step["packages"])
            argv = ["/bin/sh", "-c", f"set -e; apt-get update -q; apt-get install -y -q --no-install-recommends {pkgs}; "
                    "apt-get clean; rm -rf /var/lib/apt/lists/*"]
            what = "apt-get install"
        elif kind == "run_commands":
            script = "set -e\n" + "".join(
                f"echo {shlex.quote('$ ' + c)}\n/bin/sh -c {shlex.quote(c)}\n" for c in step["commands"])
            argv, what = ["/bin/sh", "-c", script], "the commands"
        else:
            spec_path = _write_function_spec(step, tmp)
            fn = step["function"]
            code = [*(fn.get("_sys_path") or []), fn.get("_cwd") or ""]
            runtime = self.runtime_path()
            mounts += [Mount(p, p, read_only=True) for p in runtime_dirs(runtime)]
            mounts += [Mount(p, p, read_only=True) for p in existing_outermost(code)]
            env.update(_function_env(step, meta, venv, runtime))
            env["PATH"] = os.path.join(venv, "bin") + os.pathsep + DEBIAN_PATH
            argv = [os.path.join(venv, "bin", "python"), "-m", "homeport.runtime._build", str(spec_path)]
            what = f"the function {fn['qualname']}"
        lower = [str(self.layers / k / "rootfs") for k in reversed(rootfs["uppers"])] + [rootfs["base"]]
        spec = json.dumps({"lower": lower, "upper": str(upper), "work": str(work), "scratch": str(scratch), "cwd": cwd})
        tail = Tail(out)
        code_ = await self.run_container(argv, env, spec, mounts, tail, float(step.get("timeout") or INSTALL_TIMEOUT),
                                         None)
        if code_ is None:
            raise ImageBuildFailed(f"{what} did not finish within {step.get('timeout') or INSTALL_TIMEOUT:g}s"
                                   f"{tail_text(tail.lines)}")
        if code_ != 0:
            raise ImageBuildFailed(f"{what} exited with code {code_}{tail_text(tail.lines)}")
        for d in (work, scratch):
            await asyncio.to_thread(shutil.rmtree, d, True)
        with contextlib.suppress(FileNotFoundError):
            (tmp / ".run_function.msgpack").unlink()
        rootfs["uppers"] = [*rootfs["uppers"], key]
        meta["rootfs"] = rootfs

    async def run_function(self, step: dict[str, Any], tmp: Path, meta: dict[str, Any], out: LogFn) -> None:
        """run_function in an image without a root file system: in a sandbox where the host is read-only,
        so what the function writes lands in the image (its environment, its files) or fails, never on
        the host, where it would be shared by every image and not be part of this one."""
        fn = step["function"]
        what = f"the function {fn['qualname']}"
        if self.run_container is None:
            raise ImageUnsupported(f"Image.run_function(): {what} runs in a sandbox of the control plane's "
                                   "backend, and this image builder has none")
        spec_path = _write_function_spec(step, tmp)
        venv = str(tmp / "venv")
        runtime = self.runtime_path()
        env = _function_env(step, meta, venv, runtime)
        cwd = _existing_dir(meta.get("workdir")) or _existing_dir(fn.get("_cwd"))
        mounts = _function_step_mounts(tmp, meta, fn, runtime)
        argv = [os.path.join(venv, "bin", "python"), "-m", "homeport.runtime._build", str(spec_path)]
        tail = Tail(out)
        timeout = float(step.get("timeout") or 3600)
        try:
            code = await self.run_container(argv, env, None, mounts, tail, timeout, cwd)
        finally:
            with contextlib.suppress(FileNotFoundError):
                spec_path.unlink()
        if code is None:
            raise ImageBuildFailed(f"{what} did not finish within {timeout:g}s{tail_text(tail.lines)}")
        if code != 0:
            raise ImageBuildFailed(f"{what} exited with code {code}{read_only_hint(tail.lines)}{tail_text(tail.lines)}")


def _needs_rootfs(kind: str, why: str) -> str:
    what = "Debian packages" if kind == "apt_install" else "shell commands"
    return (
        f"Image.{kind}() cannot be built on this machine: installing {what} into an image needs a "
        f"Debian root file system for it (made once with `debootstrap`, run in a mount namespace), and "
        f"{why}. Remove the step and install what it provides on this machine instead, or use "
        "pip_install/uv_pip_install for Python packages."
    )


def _write_function_spec(step: dict[str, Any], tmp: Path) -> Path:
    fn = step["function"]
    spec = {
        "module_name": fn["module_name"],
        "module_file": fn.get("_module_file"),
        "qualname": fn["qualname"],
        "serialized": fn.get("_serialized"),
        "sys_path": fn.get("_sys_path") or [],
        "args": step["args"],
    }
    spec_path = tmp / ".run_function.msgpack"
    spec_path.write_bytes(msgpack.packb(spec, use_bin_type=True))
    return spec_path


def _function_env(step: dict[str, Any], meta: dict[str, Any], venv: str, runtime: str) -> dict[str, str]:
    tmp = os.path.dirname(venv)
    env = BuiltImage("build", "", venv, "", env=dict(meta.get("env") or {}),
                     python_path=[os.path.join(tmp, "fs", r.lstrip("/")) for r in meta.get("python_roots", ())]
                     ).environ(os.environ, runtime)
    env.update(step.get("env") or {})
    env.update(step.get("_secret_env") or {})
    env.update({P.ENV_IS_REMOTE: "1", P.ENV_MODAL_IS_REMOTE: "1", "PYTHONUNBUFFERED": "1",
                P.ENV_IMAGE_HASH: step.get("_image_hash") or ""})
    return env


def _function_step_mounts(tmp: Path, meta: dict[str, Any], fn: dict[str, Any], runtime: str) -> list[Mount]:
    """What a run_function step sees besides the read-only host: writable, the layer being built (the
    environment, the image's files at their paths); readable wherever the host's are hidden (its /tmp
    is private), the interpreter, the runtime and the function's code."""
    interpreter = os.path.dirname(os.path.dirname(os.path.realpath(meta["python"]["path"])))
    mounts = [Mount(str(tmp), str(tmp), read_only=False)]
    mounts += [Mount(str(tmp / "fs" / t.lstrip("/")), t, read_only=False) for t in meta.get("fs_targets", ())]
    mounts += [Mount(p, p, read_only=True) for p in outermost([interpreter, *runtime_dirs(runtime)])]
    mounts += [Mount(p, p, read_only=True) for p in existing_outermost([*(fn.get("_sys_path") or []), fn.get("_cwd") or ""])]
    return mounts


def _existing_dir(path: str | None) -> str | None:
    return path if path and os.path.isdir(path) else None
