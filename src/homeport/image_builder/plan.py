"""What an image request means on this machine, found without building anything.

Each step is filled in with what it resolves to here (the interpreter `debian_slim` finds, the digests
of the files it reads), which `layers` hashes into the names of its layers. Files added at container
start (`copy=False`) are not layers: they are staged by stat under `mounts/` (`stage_mounts`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import layers as L
from .errors import ImageBuildFailed, ImageUnsupported
from .interpreters import Interpreters, NoInterpreter
from .rootfs import ROOTFS_INTERPRETERS

FILE_KINDS = frozenset({"add_local_file", "add_local_dir", "add_local_python_source"})
ROOTFS_KINDS = frozenset({"apt_install", "run_commands"})  # steps that give an image its own root file system
NODE_UNBUILDABLE = ROOTFS_KINDS | {"run_function"}  # steps only the control plane's builder runs
INSTALL_KINDS = frozenset({"pip_install", "uv_pip_install", "pip_install_from_requirements",
                           "pip_install_from_pyproject"})


@dataclass
class Plan:
    """An image request as this machine builds it (`ImageBuilder.plan`): its steps, filled in with
    what they mean here (the interpreter, file digests), and the names of its layers."""

    steps: list[dict[str, Any]]
    layer_steps: list[dict[str, Any]]
    mount_steps: list[dict[str, Any]]
    keys: list[str]


class FileDigests:
    """sha256 of local files, remembered by (path, size, mtime, inode) so an unchanged file costs a stat."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[tuple[int, int, int], str]] = {}

    def stat_key(self, path: str) -> tuple[int, int, int]:
        st = os.stat(path)
        return (st.st_size, st.st_mtime_ns, st.st_ino)

    def digest(self, path: str) -> str:
        key = self.stat_key(path)
        hit = self._cache.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        value = h.hexdigest()
        self._cache[path] = (key, value)
        return value


def request_steps(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's steps (copies), or what is wrong with its base image."""
    steps = [dict(s) for s in request["steps"]]
    for s in steps:  # what `Image.imports()` compares with during `run_function` steps
        s["_image_hash"] = request.get("image_hash") or ""
    if not steps or steps[0]["kind"] not in ("debian_slim", "from_registry"):
        raise ImageBuildFailed("an image starts with Image.debian_slim() (or Image.from_registry())")
    if steps[0]["kind"] == "from_registry":
        raise ImageUnsupported(
            f"Image.from_registry({steps[0].get('tag')!r}) is not supported by Homeport yet: it needs "
            "a container image puller. Use Image.debian_slim() with the packages the function needs."
        )
    return steps


def enrich(steps: list[dict[str, Any]], interpreters: Interpreters, digests: FileDigests, rootfs_base: str) -> None:
    """Fill in what each step means on this machine (hashed with it)."""
    # An image with its own root file system carries its interpreter into it: not the system's.
    own_root = any(s["kind"] in ROOTFS_KINDS for s in steps)
    for step in steps:
        kind = step["kind"]
        if kind == "debian_slim":
            try:
                interp = interpreters.find(step.get("python_version") or "3",
                                           ROOTFS_INTERPRETERS if own_root else None)
            except NoInterpreter as exc:
                raise ImageBuildFailed(f"Image build failed at step 1, {L.describe(step)}: {exc}") from None
            step["interpreter"] = {"path": interp.path, "version": interp.version_str}
        elif kind == "pip_install_from_requirements":
            step["content_sha256"] = _digest_or_fail(digests, step, step["requirements_txt"])
        elif kind == "pip_install_from_pyproject":
            step["content_sha256"] = _digest_or_fail(digests, step, step["pyproject_toml"])
        elif kind == "uv_pip_install" and step.get("requirements"):
            step["content_sha256"] = [_digest_or_fail(digests, step, r) for r in step["requirements"]]
        elif kind in ROOTFS_KINDS:
            step["rootfs_base"] = rootfs_base
        elif kind in FILE_KINDS:
            step["_files"] = step.pop("files", [])
            step["_local_path"] = step.pop("local_path", None)
            step["content"] = [[t, _digest_or_fail(digests, step, s)] for t, s in step["_files"]]


_READ_FILES = frozenset({"pip_install_from_requirements", "pip_install_from_pyproject", *FILE_KINDS})


def enrich_is_quick(steps: list[dict[str, Any]], interpreters: Interpreters) -> bool:
    """Whether `enrich` of `steps` reads no file and starts no interpreter (so it need not leave the
    event loop: a thread's round trip per image cost ~0.3 ms of every `app.run()`)."""
    if any(s["kind"] in ROOTFS_KINDS for s in steps):
        return False  # its interpreter is checked on disk (`ROOTFS_INTERPRETERS`)
    for step in steps:
        kind = step["kind"]
        if kind in _READ_FILES or (kind == "uv_pip_install" and step.get("requirements")):
            return False
        if kind == "debian_slim" and not interpreters.found_at_once(step.get("python_version") or "3"):
            return False
    return True


def _digest_or_fail(digests: FileDigests, step: dict[str, Any], path: str) -> str:
    try:
        return digests.digest(path)
    except OSError as exc:
        raise ImageBuildFailed(f"{L.describe(step)}: cannot read {path}: {exc.strerror}") from None


def local_interpreters(steps: list[dict[str, Any]], interpreters: Interpreters) -> None:
    """Steps another builder planned, with the same Python wherever this machine has it (the layer
    keeps its name)."""
    for step in steps:
        interp = step.get("interpreter")
        if step["kind"] == "debian_slim" and interp and not os.path.exists(interp["path"]):
            try:
                found = interpreters.find(interp["version"])
            except NoInterpreter as exc:
                raise ImageBuildFailed(f"{L.describe(step)}: {exc}") from None
            step["interpreter"] = {"path": found.path, "version": found.version_str}


def node_steps(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Layer steps as another node's builder gets them (`ImageBuilder.build_steps`): what they are
    hashed by, and the local paths they read, but no secret's value (a step that had secrets says so).
    A step that runs in a sandbox of the control plane's backend (a root file system's, `run_function`)
    keeps only its kind: no other node builds it."""
    out: list[dict[str, Any]] = []
    for step in steps:
        portable = {k: v for k, v in step.items() if k not in ("_secret_env", "force_build")}
        if step.get("_secret_env"):
            portable["_had_secrets"] = True
        try:
            json.dumps(portable)
        except (TypeError, ValueError):
            portable = {}
        if not portable or step["kind"] in NODE_UNBUILDABLE:
            portable = {"kind": step["kind"], "_not_portable": True}
        out.append(portable)
    return out


def stage_mounts(mounts_dir: Path, digests: FileDigests,
                 steps: list[dict[str, Any]]) -> tuple[str | None, dict[str, Any]]:
    """Copy the files added at container start into a directory named by their paths and stats."""
    if not steps:
        return None, {}
    listing = []
    for step in steps:
        for target, source in step.get("files", ()):
            try:
                listing.append([target, source, *digests.stat_key(source)])
            except OSError as exc:
                raise ImageBuildFailed(f"{L.describe(step)}: cannot read {source}: {exc.strerror}") from None
        listing.append(["dirs", *step.get("dirs", ()), step.get("python_root")])
    key = hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    stage = mounts_dir / key
    fs = stage / "fs"
    if not stage.exists():
        tmp = mounts_dir / f".tmp-{key[:16]}-{uuid.uuid4().hex[:8]}"
        (tmp / "fs").mkdir(parents=True)
        for step in steps:
            place_files(tmp / "fs", step)
        try:
            os.rename(tmp, stage)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    mounts: list[list[str]] = []
    python_path: list[str] = []
    for step in steps:
        if step["kind"] == "add_local_python_source":
            root = str(fs / step["python_root"].lstrip("/"))
            if root not in python_path:
                python_path.append(root)
        else:
            target = step["remote_path"]
            mounts.append([str(fs / target.lstrip("/")), target])
    return key, {"mounts": mounts, "python_path": python_path}


def place_files(fs: Path, step: dict[str, Any]) -> None:
    """Copy a step's files under `fs`, at their paths in the image."""
    for d in step.get("dirs", ()):
        (fs / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
    for target, source in step.get("_files", step.get("files", ())):
        dest = fs / target.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            dest.unlink()  # never write through a hard link into an earlier layer
        shutil.copy2(source, dest)
