"""The backend's side of spare copies (`homeport.runtime._spare`): a template's copy forked ahead of
demand, placed here in a cgroup made for it before any container is handed to it.

A container then starts without a fork and without a cgroup move on its path: its cgroup is the
spare's (`Spare.cgroup`, named `homeport-spare-…`; nothing looks a container's cgroup up by name,
and cgroup v2 cannot rename one), which the backend's record of the container holds from then on, so
kill, the oom check, pids events and removal work on it as on any container's.

Only a container without cpu or memory limits takes a spare: the spare's cgroup has only the process
limit and the freezer (cgroup v1 would need a move into new memory and cpu groups, the very wait a
spare saves), so a limited one starts as before, in a cgroup with its limits. Spares are made only
where the control plane is root (it can make cgroups) and `HOMEPORT_SPARES` is not 0; elsewhere every
container starts as before.

A spare that dies unused, or is left when its template exits, is emptied and its cgroup removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._cgroups import Cgroup, Cgroups, CgroupsUnavailable

log = logging.getLogger("homeport.backend.local")

ENV_SPARES = "HOMEPORT_SPARES"  # 0: no spare copies (every container forked on demand, as before)

Empty = Callable[[Cgroup], Awaitable[None]]  # kill what is in a cgroup, and wait (a little) until it is gone


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this control plane keeps spare copies: root (it makes their cgroups), not turned off."""
    environ = os.environ if environ is None else environ
    return os.geteuid() == 0 and environ.get(ENV_SPARES, "1") != "0"


def usable_by(memory_limit_mib: int | None, cpu_limit: float | None) -> bool:
    """Whether a container may take a spare: one with limits needs a cgroup made with them."""
    return memory_limit_mib is None and cpu_limit is None


@dataclass(eq=False)
class Spare:
    name: str
    pid: int  # as this process sees it
    owner: Any  # the template (`_templates._Template`) it was forked from
    cgroup: Cgroup | None = None  # set once it is in it: only then is it handed a container


@dataclass(eq=False)
class SparePool:
    """Every template's spares: placed as they are announced, taken by containers, released."""

    cgroups: Cgroups
    empty: Empty
    _tasks: set[asyncio.Task] = field(default_factory=set)
    _names: itertools.count = field(default_factory=itertools.count)

    async def place(self, pid: int) -> Cgroup | None:
        """A cgroup of its own for the spare `pid`, with it in it (None: it cannot have one)."""
        try:
            cgroup = self.cgroups.create(f"homeport-spare-{os.getpid()}-{next(self._names)}", None, None)
        except (CgroupsUnavailable, OSError) as exc:
            log.info("no spare copies: %s", exc)
            return None
        try:  # in a thread: the kernel may take ~10 ms over it, which the event loop must not wait for
            await asyncio.to_thread(cgroup.add, pid)
        except OSError as exc:
            log.info("a spare copy could not be placed in its cgroup: %s", exc)
            await self.release(cgroup)
            return None
        return cgroup

    async def release(self, cgroup: Cgroup) -> None:
        await self.empty(cgroup)
        cgroup.remove()

    def spared(self, spares: dict[str, Spare], spare: Spare, live: Callable[[], bool]) -> None:
        """A template announced `spare` (into its `spares`): place it, off any container's path."""
        spares[spare.name] = spare
        self._run(self._place(spares, spare, live))

    async def _place(self, spares: dict[str, Spare], spare: Spare, live: Callable[[], bool]) -> None:
        cgroup = await self.place(spare.pid)
        if cgroup is None:  # left unused: its template makes no other while it lives
            return
        if spares.get(spare.name) is not spare or not live():  # it died, or its template did, meanwhile
            await self.release(cgroup)
            return
        spare.cgroup = cgroup

    @staticmethod
    def take(spares: dict[str, Spare]) -> Spare | None:
        """A placed spare of a template, for one container: it is the template's no more."""
        for name, spare in spares.items():
            if spare.cgroup is not None:
                del spares[name]
                return spare
        return None

    def gone(self, spare: Spare) -> None:
        """`spare` died, or is to die (lost, or taken by a container that did not start): its cgroup goes."""
        if spare.cgroup is not None:
            cgroup, spare.cgroup = spare.cgroup, None
            self._run(self.release(cgroup))

    def all_gone(self, spares: dict[str, Spare]) -> None:
        """The template is gone: so are its spares (they leave when its end of their pair closes)."""
        for spare in spares.values():
            self.gone(spare)
        spares.clear()

    def _run(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Wait for the placements and releases under way (a placement that ends now releases)."""
        while self._tasks:
            with contextlib.suppress(Exception):
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
