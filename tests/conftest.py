"""Fixtures shared by every test: the integration tests' control plane and the check that each test
(and each test module) stops every process and thread it started."""

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import psutil
import pytest

from homeport.testing import Platform

pytest_plugins = ("pytester",)

APPS = os.path.join(os.path.dirname(__file__), "integration", "apps")


@pytest.fixture(scope="session", autouse=True)
def _containers_share_the_test_directory(tmp_path_factory):
    """Containers are isolated from the host (read-only, /tmp their own); the tests' apps leave notes
    for the tests in pytest's temporary directory, which every container may therefore write."""
    os.environ.setdefault("HOMEPORT_CONTAINER_SHARED", str(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="session")
def platform():
    """One private control plane for the integration tests; stopped and checked for leftovers at the end."""
    with Platform() as p:
        yield p


@pytest.fixture(scope="session")
def apps_path():
    if APPS not in sys.path:
        sys.path.insert(0, APPS)
    return APPS


# Threads that live as long as the test process once something started them, reused by every later test:
# the SDK's event loop thread and the idle workers of its default executor (asyncio's or uvloop's).
PROCESS_LIFETIME_THREADS = ("homeport-bridge", "asyncio_", "uvloop_")
_REPORTED_THREADS: set[threading.Thread] = set()
# How long what a test stopped may take to be gone (polled; a loaded machine may take seconds).
LEFTOVER_GRACE_S = 15.0


def _descendants() -> dict[tuple[int, float], psutil.Process]:
    """This process's live descendants, by (pid, start time) so a reused pid is a new process."""
    found = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                found[(proc.pid, proc.create_time())] = proc
        except psutil.NoSuchProcess:
            pass
    return found


class HeldProcesses:
    """Processes that a fixture wider than one test keeps on purpose, started during a test (the nodes a
    test adds to a module's cluster): `with held.processes(lambda: [...]):` around the fixture's life."""

    def __init__(self) -> None:
        self._owners: list[Callable[[], Iterable[psutil.Process]]] = []

    @contextlib.contextmanager
    def processes(self, owned: Callable[[], Iterable[psutil.Process]]) -> Iterator[None]:
        self._owners.append(owned)
        try:
            yield
        finally:
            self._owners.remove(owned)

    def pids(self) -> set[int]:
        """The held processes and every process they started."""
        found = set()
        for owned in self._owners:
            for proc in owned():
                try:
                    found.update([proc.pid, *(p.pid for p in proc.children(recursive=True))])
                except psutil.NoSuchProcess:
                    pass
        return found


HELD = HeldProcesses()


@pytest.fixture(scope="session")
def held_processes() -> HeldProcesses:
    """See `HeldProcesses`."""
    return HELD


class _Snapshot:
    """The processes and threads alive now; `leftovers()` names those started since that are alive still.

    A process started since by one alive at the snapshot (a container of a control plane that a wider
    fixture holds), by a `Platform` still held (inside its `with`, as in the `platform` fixture, even if
    restarted), or held by a fixture (`held_processes`), is theirs, checked where they stop, not a leftover.
    """

    def __init__(self) -> None:
        self.processes = _descendants()
        self.threads = set(threading.enumerate())

    def _new_processes(self) -> list[psutil.Process]:
        owned = {p.pid for platform in Platform.held for p in platform.processes()} | HELD.pids()
        for proc in self.processes.values():
            try:
                owned.update(p.pid for p in proc.children(recursive=True))
            except psutil.NoSuchProcess:
                pass
        return [p for key, p in _descendants().items() if key not in self.processes and p.pid not in owned]

    def _new_threads(self) -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t not in self.threads and t not in _REPORTED_THREADS
                and t.is_alive() and not t.name.startswith(PROCESS_LIFETIME_THREADS)]

    def leftovers(self, grace: float = LEFTOVER_GRACE_S) -> list[str]:
        deadline = time.monotonic() + grace
        while True:
            procs, threads = self._new_processes(), self._new_threads()
            if not (procs or threads) or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        found = []
        for proc in procs:
            try:
                found.append(f"process {proc.pid}: {' '.join(proc.cmdline()) or proc.name()}")
                proc.kill()  # so that it does not fail the tests after this one too
            except psutil.NoSuchProcess:
                pass
        found += [f"thread {t.name!r} ({'daemon' if t.daemon else 'non-daemon'})" for t in threads]
        _REPORTED_THREADS.update(threads)  # a thread cannot be stopped from outside: it fails one test, not all after
        return found


@pytest.fixture(scope="module", autouse=True)
def _module_leaves_nothing_running(request):
    """What a test module's own fixtures started (an app run, a control plane) stops with the module."""
    before = _Snapshot()
    yield
    if leftovers := before.leftovers():
        pytest.fail(f"{request.node.nodeid} left these running after its fixtures stopped:\n  "
                    + "\n  ".join(leftovers), pytrace=False)


@pytest.fixture(autouse=True)
def _test_leaves_nothing_running(request):
    """What a test started (subprocesses, a control plane, threads) is stopped by the end of the test."""
    before = _Snapshot()
    yield
    if leftovers := before.leftovers():
        pytest.fail(f"{request.node.nodeid} left these running:\n  " + "\n  ".join(leftovers), pytrace=False)
