"""What `Sandbox` is built on: readiness probes, the requests a sandbox sends to the control plane, and the
helpers for `Sandbox.create`'s and `exec`'s arguments (secrets, resource limits, lists)."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

from . import _protocol as P
from ._bridge import MethodWithAio
from ._client import get_client
from ._image_request import build_request
from .exception import InvalidError, UnimplementedError


class Probe:
    """A readiness probe for `Sandbox.create(readiness_probe=...)` and `Sandbox.wait_until_ready()`."""

    def __init__(self, *, tcp_port: int | None = None, exec_argv: tuple[str, ...] | None = None,
                 interval_ms: int = 100) -> None:
        self.tcp_port = tcp_port
        self.exec_argv = exec_argv
        self.interval_ms = interval_ms

    @classmethod
    def with_tcp(cls, port: int, *, interval_ms: int = 100) -> Probe:
        """Ready once a TCP connection to `port` inside the sandbox succeeds."""
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise InvalidError(f"Probe port must be between 1 and 65535, got {port!r}")
        if interval_ms <= 0:
            raise InvalidError("interval_ms must be greater than 0")
        return cls(tcp_port=port, interval_ms=interval_ms)

    @classmethod
    def with_exec(cls, *argv: str, interval_ms: int = 100) -> Probe:
        """Ready once this command exits with 0 inside the sandbox."""
        if not argv or not all(isinstance(a, str) for a in argv):
            raise InvalidError("Probe.with_exec needs a command: strings, at least one")
        if interval_ms <= 0:
            raise InvalidError("interval_ms must be greater than 0")
        return cls(exec_argv=tuple(argv), interval_ms=interval_ms)


def unimplemented(what: str, why: str = "") -> UnimplementedError:
    return UnimplementedError(f"{what} is not built in Homeport yet" + (f": {why}" if why else ""))


def in_container() -> bool:
    return os.environ.get(P.ENV_IS_REMOTE) == "1"


async def request(msg: P.SandboxRequest, timeout: float | None = 120) -> Any:
    client = await get_client()
    return await client.request(msg, timeout=timeout)


async def ask_info(msg: P.SandboxRequest, timeout: float | None = 120) -> P.SandboxInfo:
    """What create|get|wait|terminate|from_name answer: the sandbox's state."""
    return P.reply_as(await request(msg, timeout), P.SandboxInfo)


async def list_infos(msg: P.SandboxList) -> list[P.SandboxInfo]:
    return [P.reply_as(info, P.SandboxInfo) for info in await request(msg)]


async def build_image(image: Any) -> str:
    client = await get_client()
    ids = await client.request(P.ImageBuild(images=[build_request(image)]), timeout=None)
    return ids[0]


def split_secrets(secrets: Sequence[Any] | None) -> tuple[dict[str, str], list[dict[str, Any]]]:
    env: dict[str, str] = {}
    refs = []
    for s in secrets or ():
        values = s.local_values
        if values is not None:
            env.update(values)
        else:
            refs.append({"name": s.name, "required_keys": list(s.required_keys)})
    return env, refs


def listed(value: Sequence[str] | None) -> list[str] | None:
    return None if value is None else list(value)


def enforced_limit(value: Any, what: str) -> Any:
    """A (request, limit) tuple's limit, enforced; a single number is a request, which one machine
    does not reserve for a sandbox."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise InvalidError(f"`{what}` must be a number or a (request, limit) tuple, got {value!r}")
        return value[1]
    if not isinstance(value, (int, float)) or value <= 0:
        raise InvalidError(f"`{what}` must be a positive number or a (request, limit) tuple, got {value!r}")
    return None


class ClassMethodWithAio:
    def __init__(self, impl: Any) -> None:
        self._impl = impl

    def __get__(self, obj: Any, cls: Any) -> MethodWithAio:
        return MethodWithAio(functools.partial(self._impl, cls), self._impl.__name__)
