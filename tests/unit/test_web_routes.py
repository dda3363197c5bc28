"""Pure parts of web endpoints: URL labels, port choice, and the scheduler's no-prefetch web pools."""

import pytest

from homeport.server.core.scheduler import Assign, PoolConfig, Scheduler
from homeport.server.web import candidate_ports, endpoint_label, port_range, preferred_port


@pytest.mark.parametrize(
    ("app", "tag", "method", "label", "ephemeral", "expected"),
    [
        ("shop", "api", None, None, False, "shop-api"),
        ("shop", "api", None, None, True, "shop-api-dev"),
        ("Shop_App", "Model", "predict", None, False, "shop-app-model-predict"),
        ("shop", "api", None, "my-label", False, "my-label"),
        ("shop", "api", None, "my-label", True, "my-label-dev"),
        (None, "f", None, None, False, "app-f"),
    ],
)
def test_endpoint_labels_follow_modal(app, tag, method, label, ephemeral, expected):
    assert endpoint_label(app, tag, method, label, ephemeral) == expected


def test_ports_are_stable_per_label_and_probe_upwards():
    ports = port_range("20000-20009")
    assert ports == (20000, 20009)
    first = preferred_port("shop-api", ports)
    assert 20000 <= first <= 20009 and first == preferred_port("shop-api", ports)
    candidates = candidate_ports("shop-api", ports, stored=None)
    assert candidates[0] == first and sorted(candidates) == list(range(20000, 20010))
    # A port the label had before comes first, whatever the hash says.
    assert candidate_ports("shop-api", ports, stored=20007)[0] == 20007
    with pytest.raises(ValueError, match="HOMEPORT_WEB_PORTS"):
        port_range("9-1")


def test_web_pools_hand_containers_only_what_they_run_at_once():
    ids = iter(f"c{i}" for i in range(100))
    for prefetch, expected in ((True, 2 + 1024), (False, 2)):
        s = Scheduler(lambda: next(ids))
        s.add_pool("p", PoolConfig(max_inputs=2, max_containers=1, prefetch=prefetch), 0.0)
        s.submit("p", [0], 0.0)
        (cid,) = s.containers
        s.container_ready(cid, 0.0)
        s.inputs_done(cid, [0], 1e-6, 0.1)  # very short inputs: worth prefetching, unless web
        out = s.submit("p", range(1, 2000), 0.2)
        assigned = sum(len(i.inputs) for i in out if isinstance(i, Assign))
        assert assigned == expected


def test_a_stopped_labels_port_is_not_given_to_another_label(monkeypatch):
    import asyncio
    import sqlite3

    from homeport.server.web import WebEndpoints

    class FakeGateway:
        def __init__(self):
            self.open_ports = set()

        async def open(self, port):
            self.open_ports.add(port)
            return port

        def route(self, port, endpoint, gone=""):
            pass

    class FakeRegistry:
        def __init__(self):
            self.apps = {}
            self.functions = {}
            self.containers = {}

    monkeypatch.setenv("HOMEPORT_WEB_PORTS", "21000-21003")
    web = WebEndpoints(FakeRegistry(), None, None, sqlite3.connect(":memory:"))
    web.gateway = FakeGateway()

    async def go():
        first = await web._open("porta-f")
        # porta stopped: its port keeps answering 404, and stays porta's.
        others = [await web._open(label) for label in ("portb-f", "portc-f", "portd-f")]
        return first, others, await web._open("porta-f")

    first, others, again = asyncio.run(go())
    assert first not in others and len(set(others)) == 3
    assert again == first  # the same URL when porta runs again
