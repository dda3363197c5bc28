"""`Image`: the environment a function runs in, described as an immutable list of build steps.

This module only describes images; building them is the image builder's job. Each method returns a
new `Image` with one more `ImageStep` (`_image_steps`, with the content hash), so images can be shared
and extended freely. The methods' arguments are checked by `_image_args`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any, TypeVar

from ._image_args import (
    absolute_local_path,
    check_env,
    check_ignore,
    check_optional_str,
    check_python_version,
    check_remote_path,
    check_volumes,
    flatten_str_args,
    index_options,
    run_options,
)
from ._image_steps import (  # re-exported: `ImageStep` is pickled with an image, `_thaw` read by `_image_request`
    BASE_KINDS,
    LOCAL_KINDS,
    ImageStep,
    _thaw,
    steps_hash,
)
from ._protocol import ENV_IMAGE_HASH, ENV_IS_REMOTE
from ._secret import Secret
from ._volume import Volume
from .exception import InvalidError

__all__ = ["BASE_KINDS", "LOCAL_KINDS", "Image", "ImageStep", "_thaw"]

_F = TypeVar("_F", bound=Callable[..., Any])


def _instance_method(method: _F) -> _F:
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(self, Image):
            raise InvalidError(
                "Image has not been constructed yet. Use one of the static factory methods prior to calling "
                f"`{method.__name__}` like `Image.debian_slim().{method.__name__}(...)` or "
                "`Image.from_registry(...)`."
            )
        return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class Image:
    """The environment a function runs in: a base image plus build steps, all plain data.

    Every method returns a new `Image`; the original is unchanged.

    ```python
    image = (
        modal.Image.debian_slim(python_version="3.12")
        .apt_install("git")
        .pip_install("numpy", ["pandas", "pyarrow"])
        .env({"MODE": "prod"})
    )

    with image.imports():
        import numpy as np  # only needs to import inside the container

    @app.function(image=image)
    def f():
        ...
    ```
    """

    __slots__ = ("_steps",)
    _steps: tuple[ImageStep, ...]

    def __init__(self) -> None:
        raise InvalidError(
            "Image cannot be created directly; start from Image.debian_slim() or Image.from_registry()."
        )

    @classmethod
    def _from_steps(cls, steps: tuple[ImageStep, ...]) -> Image:
        obj = object.__new__(cls)
        obj._steps = steps
        return obj

    def _extend(self, kind: str, **params: Any) -> Image:
        step = ImageStep.make(kind, **params)
        if not step.is_mount and any(s.is_mount for s in self._steps):
            raise InvalidError(
                "An image tried to run a build step after using `image.add_local_*` to include local files. "
                "Run `image.add_local_*` commands last in your image build, so that changing a local file does "
                "not rebuild the image: the files are then added when each container starts. If you need build "
                "steps after adding local files, set `copy=True` in the `image.add_local_*` call to copy the "
                "files into the image at build time."
            )
        return Image._from_steps((*self._steps, step))

    # --- base images ------------------------------------------------------------------------------

    @staticmethod
    def debian_slim(python_version: str | None = None, force_build: bool = False) -> Image:
        """A slim Debian image with Python (by default this interpreter's major.minor version)."""
        version = check_python_version(python_version)
        if version is None:
            version = f"{sys.version_info.major}.{sys.version_info.minor}"
        return Image._from_steps(
            (ImageStep.make("debian_slim", python_version=version, force_build=bool(force_build)),)
        )

    @staticmethod
    def from_registry(
        tag: str,
        secret: Secret | None = None,
        *,
        setup_dockerfile_commands: Sequence[str] = (),
        force_build: bool = False,
        add_python: str | None = None,
    ) -> Image:
        """An image pulled from a container registry, e.g. `Image.from_registry("ubuntu:24.04", add_python="3.12")`."""
        if not isinstance(tag, str) or not tag.strip() or any(c.isspace() for c in tag):
            raise InvalidError(
                f"Image.from_registry() needs an image reference like 'python:3.12-slim', got {tag!r}"
            )
        if secret is not None and not isinstance(secret, Secret):
            raise InvalidError(f"`secret` must be a modal.Secret, not {type(secret).__name__}")
        commands = flatten_str_args(
            "from_registry", "setup_dockerfile_commands", list(setup_dockerfile_commands)
        )
        return Image._from_steps(
            (
                ImageStep.make(
                    "from_registry",
                    tag=tag,
                    secret=secret,
                    setup_dockerfile_commands=commands,
                    add_python=check_python_version(add_python, "add_python"),
                    force_build=bool(force_build),
                ),
            )
        )

    # --- Python packages --------------------------------------------------------------------------

    @_instance_method
    def pip_install(
        self,
        *packages: str | list[str],
        find_links: str | None = None,
        index_url: str | None = None,
        extra_index_url: str | None = None,
        pre: bool = False,
        extra_options: str = "",
        force_build: bool = False,
        env: dict[str, str | None] | None = None,
        secrets: Sequence[Secret] | None = None,
        gpu: str | None = None,
    ) -> Image:
        """Install Python packages with pip: `image.pip_install("numpy==2.1", ["pandas"])`."""
        pkgs = flatten_str_args("pip_install", "packages", packages)
        if not pkgs:
            return self
        return self._extend(
            "pip_install",
            packages=pkgs,
            **index_options(find_links, index_url, extra_index_url, pre, extra_options),
            **run_options(env, secrets, gpu, force_build),
        )

    @_instance_method
    def uv_pip_install(
        self,
        *packages: str | list[str],
        requirements: Sequence[str] | None = None,
        find_links: str | None = None,
        index_url: str | None = None,
        extra_index_url: str | None = None,
        pre: bool = False,
        extra_options: str = "",
        force_build: bool = False,
        uv_version: str | None = None,
        env: dict[str, str | None] | None = None,
        secrets: Sequence[Secret] | None = None,
        gpu: str | None = None,
    ) -> Image:
        """Install Python packages with uv: `image.uv_pip_install("torch", requirements=["req.txt"])`."""
        pkgs = flatten_str_args("uv_pip_install", "packages", packages)
        if isinstance(requirements, (str, os.PathLike)):
            raise InvalidError("Image.uv_pip_install(): `requirements` must be a list of file paths")
        reqs = [absolute_local_path(r) for r in requirements or ()]
        if not pkgs and not reqs:
            return self
        return self._extend(
            "uv_pip_install",
            packages=pkgs,
            requirements=reqs,
            uv_version=check_optional_str("uv_version", uv_version),
            **index_options(find_links, index_url, extra_index_url, pre, extra_options),
            **run_options(env, secrets, gpu, force_build),
        )

    @_instance_method
    def pip_install_from_requirements(
        self,
        requirements_txt: str | os.PathLike[str],
        find_links: str | None = None,
        *,
        index_url: str | None = None,
        extra_index_url: str | None = None,
        pre: bool = False,
        extra_options: str = "",
        force_build: bool = False,
        env: dict[str, str | None] | None = None,
        secrets: Sequence[Secret] | None = None,
        gpu: str | None = None,
    ) -> Image:
        """Install the packages listed in a local requirements file."""
        return self._extend(
            "pip_install_from_requirements",
            requirements_txt=absolute_local_path(requirements_txt),
            **index_options(find_links, index_url, extra_index_url, pre, extra_options),
            **run_options(env, secrets, gpu, force_build),
        )

    @_instance_method
    def pip_install_from_pyproject(
        self,
        pyproject_toml: str | os.PathLike[str],
        optional_dependencies: Sequence[str] = (),
        *,
        find_links: str | None = None,
        index_url: str | None = None,
        extra_index_url: str | None = None,
        pre: bool = False,
        extra_options: str = "",
        force_build: bool = False,
        env: dict[str, str | None] | None = None,
        secrets: Sequence[Secret] | None = None,
        gpu: str | None = None,
    ) -> Image:
        """Install the dependencies (and chosen optional groups) of a local `pyproject.toml`."""
        if isinstance(optional_dependencies, str):
            optional_dependencies = [optional_dependencies]
        extras = flatten_str_args(
            "pip_install_from_pyproject", "optional_dependencies", optional_dependencies
        )
        return self._extend(
            "pip_install_from_pyproject",
            pyproject_toml=absolute_local_path(pyproject_toml),
            optional_dependencies=extras,
            **index_options(find_links, index_url, extra_index_url, pre, extra_options),
            **run_options(env, secrets, gpu, force_build),
        )

    # --- system packages and commands -------------------------------------------------------------

    @_instance_method
    def apt_install(
        self,
        *packages: str | list[str],
        force_build: bool = False,
        env: dict[str, str | None] | None = None,
        secrets: Sequence[Secret] | None = None,
        gpu: str | None = None,
    ) -> Image:
        """Install Debian packages: `image.apt_install("git", "curl")`."""
        pkgs = flatten_str_args("apt_install", "packages", packages)
        if not pkgs:
            return self
        return self._extend("apt_install", packages=pkgs, **run_options(env, secrets, gpu, force_build))

    @_instance_method
    def run_commands(
        self,
        *commands: str | list[str],
        env: dict[str, str | None] | None = None,
        secrets: Sequence[Secret] | None = None,
        volumes: dict[str, Volume] | None = None,
        gpu: str | None = None,
        force_build: bool = False,
    ) -> Image:
        """Run shell commands at build time: `image.run_commands("git clone https://... /src")`."""
        cmds = flatten_str_args("run_commands", "commands", commands)
        if not cmds:
            return self
        return self._extend(
            "run_commands",
            commands=cmds,
            volumes=check_volumes(volumes),
            **run_options(env, secrets, gpu, force_build),
        )

    @_instance_method
    def run_function(
        self,
        raw_f: Callable[..., Any],
        *,
        env: dict[str, str | None] | None = None,
        secrets: Sequence[Secret] | None = None,
        volumes: dict[str, Volume] | None = None,
        gpu: str | None = None,
        cpu: float | None = None,
        memory: int | None = None,
        timeout: int = 3600,
        force_build: bool = False,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        include_source: bool = True,
    ) -> Image:
        """Run a Python function at build time and keep the files it writes, e.g. to download weights."""
        if not callable(raw_f):
            raise InvalidError(f"Image.run_function() needs a function, got {type(raw_f).__name__}")
        if getattr(raw_f, "__name__", None) == "<lambda>":
            raise InvalidError("Image.run_function does not support lambda functions.")
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
            raise InvalidError(
                f"Image.run_function(): `timeout` must be a positive int (seconds), got {timeout!r}"
            )
        if not isinstance(args, (list, tuple)):
            raise InvalidError("Image.run_function(): `args` must be a tuple or list")
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise InvalidError("Image.run_function(): `kwargs` must be a dict")
        return self._extend(
            "run_function",
            function=raw_f,
            args=tuple(args),
            kwargs=dict(kwargs or {}),
            volumes=check_volumes(volumes),
            cpu=cpu,
            memory=memory,
            timeout=timeout,
            include_source=bool(include_source),
            **run_options(env, secrets, gpu, force_build),
        )

    # --- configuration ----------------------------------------------------------------------------

    @_instance_method
    def env(self, vars: dict[str, str]) -> Image:
        """Set environment variables in the image: `image.env({"HF_HOME": "/cache"})`."""
        return self._extend("env", vars=check_env(vars))

    @_instance_method
    def workdir(self, path: str | PurePosixPath) -> Image:
        """Set the working directory for later build steps and for the function."""
        if not isinstance(path, (str, PurePosixPath)) or not str(path):
            raise InvalidError(f"Image.workdir() needs a path, got {path!r}")
        return self._extend("workdir", path=PurePosixPath(path).as_posix())

    # --- local files ------------------------------------------------------------------------------

    @_instance_method
    def add_local_file(
        self, local_path: str | os.PathLike[str], remote_path: str, *, copy: bool = False
    ) -> Image:
        """Add a local file at `remote_path` (absolute; a trailing `/` keeps the file's name)."""
        local = absolute_local_path(local_path)
        remote = check_remote_path("add_local_file", remote_path)
        if remote.endswith("/"):
            remote += os.path.basename(local)
        return self._extend("add_local_file", local_path=local, remote_path=remote, copy=bool(copy))

    @_instance_method
    def add_local_dir(
        self,
        local_path: str | os.PathLike[str],
        remote_path: str,
        *,
        copy: bool = False,
        ignore: Sequence[str] | Callable[[Any], bool] = (),
    ) -> Image:
        """Add a local directory at `remote_path` (absolute), skipping paths that match `ignore`."""
        return self._extend(
            "add_local_dir",
            local_path=absolute_local_path(local_path),
            remote_path=check_remote_path("add_local_dir", remote_path),
            copy=bool(copy),
            ignore=check_ignore(ignore),
        )

    @_instance_method
    def add_local_python_source(
        self, *modules: str, copy: bool = False, ignore: Sequence[str] | Callable[[Any], bool] | None = None
    ) -> Image:
        """Add local Python modules or packages (by import name) to `/root`, which is on `sys.path`.

        `ignore=None` keeps only `.py` files of packages.
        """
        for module in modules:
            if not isinstance(module, str) or not all(part.isidentifier() for part in module.split(".")):
                raise InvalidError(
                    f"Image.add_local_python_source(): {module!r} is not a module name; "
                    "pass import names like 'mypackage' or 'mypackage.utils'"
                )
        return self._extend(
            "add_local_python_source", modules=list(modules), copy=bool(copy), ignore=check_ignore(ignore)
        )

    # --- composition and imports ------------------------------------------------------------------

    @_instance_method
    def pipe(self, func: Callable[..., Image], *args: Any, **kwargs: Any) -> Image:
        """Apply a reusable recipe: `image.pipe(add_cuda, version="12.4")` is `add_cuda(image, version="12.4")`."""
        result = func(self, *args, **kwargs)
        if not isinstance(result, Image):
            raise InvalidError(f"Image.pipe(): {func!r} must return an Image, got {type(result).__name__}")
        return result

    @_instance_method
    @contextlib.contextmanager
    def imports(self) -> Iterator[None]:
        """Import packages that only exist inside the image.

        A failed import is ignored outside a container, so the module still loads on your machine,
        and in containers of other images, which import the same module; inside a container of this
        image the error is raised as usual.
        """
        try:
            yield
        except Exception as exc:
            if os.environ.get(ENV_IS_REMOTE) == "1" and os.environ.get(ENV_IMAGE_HASH) in (None, "", self.content_hash()):
                raise
            if not isinstance(exc, ImportError):
                warnings.warn(
                    f"Warning: caught a non-ImportError exception in an `imports()` block: {exc!r}",
                    stacklevel=3,
                )

    # --- inspection -------------------------------------------------------------------------------

    @property
    def steps(self) -> tuple[ImageStep, ...]:
        return self._steps

    @property
    def base(self) -> ImageStep:
        return self._steps[0]

    @property
    def python_version(self) -> str | None:
        """The image's Python version, or None for a registry image that brings its own Python."""
        base = self.base
        return base.get("python_version") if base.kind == "debian_slim" else base.get("add_python")

    @property
    def has_build_steps(self) -> bool:
        return len(self._steps) > 1

    def content_hash(self) -> str:
        """A sha256 hex digest naming what this image contains.

        Requirement files and copied single files count by their bytes; directories by their path.
        """
        return steps_hash(self._steps)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Image):
            return NotImplemented
        return self._steps == other._steps

    def __hash__(self) -> int:
        return hash(self._steps)

    def __repr__(self) -> str:
        base = self.base
        if base.kind == "debian_slim":
            out = f"Image.debian_slim(python_version={base.get('python_version')!r})"
        else:
            out = f"Image.from_registry({base.get('tag')!r})"
        for step in self._steps[1:]:
            main = step.get("packages") or step.get("commands") or step.get("modules")
            shown = ", ".join(repr(x) for x in main) if main else "..."
            out += f".{step.kind}({shown})"
        return out
