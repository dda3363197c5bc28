"""Liveness of the control plane's peers: containers that stopped answering.

Connections carry PING/PONG (see `_protocol`): a side that has heard nothing for HEARTBEAT_SECONDS
pings, the other answers at once, and a busy connection needs no ping at all (calls pay no extra round
trip). Here the control plane watches its ready containers: one silent for SILENCE_WARN_SECONDS (a
SIGSTOPped process, a runtime wedged in C code holding the GIL) is reported to the server log and the
app's log readers, and again when it answers. It is not killed for it: a container's inputs have their
own `timeout`, which the scheduler enforces whatever the container does. A container whose process died
is noticed by its exit (the backend) and its closed connection, not here.

Clients watch the control plane the same way (`homeport._client.Client._watchdog`); the control plane
needs no ping to its clients: a client that went away closes its connection, and a stopped client
holds nothing the control plane waits for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from .. import _protocol as P

if TYPE_CHECKING:
    from .records import ContainerRecord
    from .supervision import Supervisor

log = logging.getLogger("homeport.server")


async def watch_containers(containers: dict[str, ContainerRecord], supervisor: Supervisor) -> None:
    last = time.monotonic()
    while True:
        await asyncio.sleep(P.HEARTBEAT_SECONDS / 2)
        now = time.monotonic()
        if now - last > 2 * P.HEARTBEAT_SECONDS:
            # The control plane itself did not run (SIGSTOP, a suspended machine): what its containers
            # sent meanwhile is still unread, so their silence is measured from now on, not blamed.
            for rec in containers.values():
                rec.last_heard = max(rec.last_heard, now - P.HEARTBEAT_SECONDS)
        last = now
        try:
            check_containers(containers, supervisor, now)
        except Exception:  # liveness reports must never stop
            log.exception("checking the liveness of containers failed")


def check_containers(containers: dict[str, ContainerRecord], supervisor: Supervisor, now: float) -> None:
    ping = P.Ping()
    for rec in list(containers.values()):
        if rec.proto is None or rec.ready_at is None or rec.state == "stopping":
            continue  # before ready its runtime reads nothing (it imports and runs enter hooks)
        silent = now - rec.last_heard
        if silent < P.HEARTBEAT_SECONDS:
            if rec.silent_since is not None:
                rec.silent_since = None
                text = f"Container {rec.container_id} of '{rec.fn.tag}' answers the control plane again"
                log.info("%s", text)
                supervisor.publish(rec, text)
            continue
        rec.proto.send(ping)
        if silent >= P.SILENCE_WARN_SECONDS and rec.silent_since is None:
            rec.silent_since = now
            text = (f"Container {rec.container_id} of '{rec.fn.tag}' has not answered the control plane for "
                    f"{P.SILENCE_WARN_SECONDS:g} s (stopped, or its runtime is blocked)")
            log.warning("%s", text)
            supervisor.publish(rec, text)
