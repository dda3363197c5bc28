"""Faults: containers and the control plane die or stop, nothing is lost.

Real processes: the programs say `import modal` and run under `homeport run` / `homeport deploy`, the
test kills containers (SIGKILL) and the control plane (SIGKILL, SIGSTOP) by pid from outside. The
counts come from the program itself (inputs lost, duplicated, failed); bench/faults.py reports them.
"""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import modal
import psutil
import pytest

from homeport import _protocol as P
from homeport._bridge import run_sync
from homeport._client import get_client
from homeport.testing import Platform, homeport_cli, wait_for

pytestmark = pytest.mark.integration

PROGRAM = str(Path(__file__).parent / "programs" / "faults.py")


def containers(function: str) -> list[dict]:
    async def ls():
        return await (await get_client()).request({"t": P.CONTAINER_LIST})

    return [c for c in run_sync(ls()) if c["function"] == function]


class Run:
    """`homeport run faults.py ARGS` in a subprocess; its output is collected as it comes."""

    def __init__(self, *args: str, app: str = "faults") -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "homeport.cli", "run", PROGRAM, *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "FAULTS_APP": app})
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(s, b), daemon=True)
                         for s, b in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self._readers:
            t.start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    def running(self) -> bool:
        return self.proc.poll() is None

    def finish(self, timeout: float = 120) -> dict:
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        for t in self._readers:
            t.join(5)
        self.proc.stdout.close()
        self.proc.stderr.close()
        assert self.proc.returncode == 0, "".join(self.err[-40:])
        line = next(x for x in self.out if x.startswith("FAULTS "))
        return json.loads(line[len("FAULTS "):])


def test_sigkill_random_containers_during_a_10000_input_map_loses_and_duplicates_nothing(platform):
    run = Run("--which", "map", "--n", "10000")
    rng = random.Random(12)
    kills = []
    try:
        deadline = time.monotonic() + 90
        while run.running() and time.monotonic() < deadline and len(kills) < 10:
            busy = [c for c in containers("square") if c["state"] == "ready" and c["running"] and c["pid"]]
            if busy:
                victim = rng.choice(busy)
                try:
                    os.kill(victim["pid"], signal.SIGKILL)
                    kills.append(victim["container_id"])
                except ProcessLookupError:
                    pass
            time.sleep(0.25)
    finally:
        counts = run.finish()
    assert kills, "the map finished before any container could be killed"
    assert counts["outputs"] == counts["inputs"] == 10000
    assert (counts["lost"], counts["duplicated"], counts["failed"]) == (0, 0, 0), counts


def test_sigkill_of_a_container_during_start_up_fails_no_input(platform):
    run = Run("--which", "startup", "--n", "1000")
    victim = None
    try:
        def starting():
            rows = [c for c in containers("SlowStart") if c["state"] == "starting" and c["pid"]]
            return rows[0] if rows else None

        assert wait_for(lambda: starting() is not None, timeout=60)
        victim = starting()
        os.kill(victim["pid"], signal.SIGKILL)  # in its 3 s @enter: it never got ready
    finally:
        counts = run.finish()
    assert victim is not None and victim["state"] == "starting"
    assert (counts["outputs"], counts["lost"], counts["duplicated"], counts["failed"]) == (1000, 0, 0, 0), counts


def _kill_control_plane(p: Platform) -> None:
    """SIGKILL the control plane (no shutdown), then make sure none of its processes outlive it: its
    containers notice the closed socket and exit; what does not is killed by pid."""
    procs = p.server_processes()
    os.kill(p.pid, signal.SIGKILL)
    _gone, alive = psutil.wait_procs(procs, timeout=15)
    for proc in alive:
        proc.kill()
    psutil.wait_procs(alive, timeout=5)


def test_spawned_calls_of_a_deployed_app_survive_kill_9_of_the_control_plane(tmp_path):
    with Platform(str(tmp_path / "p")) as p:
        out = homeport_cli("deploy", PROGRAM, env={**os.environ, "FAULTS_APP": "faults-dep"})
        assert out.returncode == 0, out.stderr
        f = modal.Function.from_name("faults-dep", "slow_square")
        calls = [f.spawn(i, 1.0) for i in range(12)]
        scaled = modal.Cls.from_name("faults-dep", "Scaled")(factor=3)  # a variant: bound again after the restart
        variant_calls = [scaled.times.spawn(i, 5.0) for i in range(3)]  # still running at the kill
        done = modal.Function.from_name("faults-dep", "square").spawn(7)
        assert done.get(timeout=60) == 49  # finished before the kill: kept
        assert wait_for(lambda: any(c["running"] for c in containers("slow_square")), timeout=30)
        _kill_control_plane(p)  # some calls running, the others queued
        p.start()
        results = [modal.FunctionCall.from_id(c.object_id).get(timeout=120) for c in calls]
        assert results == [i * i for i in range(12)]
        assert [modal.FunctionCall.from_id(c.object_id).get(timeout=120) for c in variant_calls] == [0, 3, 6]
        assert modal.FunctionCall.from_id(done.object_id).get(timeout=10) == 49
        log = (p.state_dir / "server.log").read_text()
        assert "accepted by a previous control plane runs again" in log


def test_a_stopped_control_plane_is_reported_and_the_call_completes_once_it_resumes(tmp_path):
    with Platform(str(tmp_path / "p")) as p:
        run = Run("--which", "slow", "--n", "7", "--seconds", "3", app="faults-stop")
        stopped = False
        try:
            assert wait_for(lambda: any(c["running"] for c in containers("slow_square")), timeout=60)
            os.kill(p.pid, signal.SIGSTOP)
            stopped = True
            assert wait_for(lambda: any("has not answered for 10 s" in line for line in run.err), timeout=30), run.err
            time.sleep(3)  # the container, idle by now, notices too
        finally:
            if stopped:
                os.kill(p.pid, signal.SIGCONT)
            counts = run.finish()
        assert counts == {"result": 49}
        err = "".join(run.err)
        assert "homeport: the control plane answers again" in err
        # the container noticed as well (its own report, streamed as its log once the plane resumed) ...
        assert "the control plane has not answered for 10 s (is it stopped?); waiting for it" in err
        # ... while the control plane, stopped itself, does not blame its container for the silence
        assert "has not answered the control plane" not in err
