"""A function's definition and pool settings as they travel: built by the SDK, sent with only what differs
from the defaults, read back by the control plane and the container with the same defaults, and refused
by field when malformed."""

from __future__ import annotations

import modal
import msgspec
import pytest

from homeport._protocol.definition import (
    Batch,
    FunctionDefinition,
    PoolSettings,
    definition_from_wire,
    settings_from_wire,
    to_wire,
)

app = modal.App("defs")


@app.function()
def plain(x):
    return x


@app.function(timeout=20, min_containers=2, scaledown_window=10, max_containers=3)
def tuned(x):
    return x


def test_defaults_stay_off_the_wire_and_come_back_on_reading():
    reg = app._registered["plain"]
    wire = to_wire(reg.definition)
    assert not {"timeout", "startup_timeout", "max_inputs", "snapshot", "batch", "web", "params"} & set(wire)
    back = definition_from_wire(wire)
    assert (back.timeout, back.startup_limit, back.max_inputs, back.batch, back.web) == (300, 300, 1, None, None)
    assert (back.module_name, back.qualname, back.module_file) == (__name__, "plain", __file__)
    assert to_wire(reg.config) == {}
    settings = settings_from_wire(to_wire(reg.config))
    assert (settings.min_containers, settings.scaledown_window, settings.max_inputs, settings.max_containers) == \
        (0, 60, 1, None)


def test_what_the_decorator_sets_travels():
    reg = app._registered["tuned"]
    defn = definition_from_wire(to_wire(reg.definition))
    assert (defn.timeout, defn.startup_limit) == (20, 20)
    settings = settings_from_wire(to_wire(reg.config))
    assert (settings.min_containers, settings.max_containers, settings.scaledown_window) == (2, 3, 10)


def test_a_batch_travels_as_its_two_numbers():
    defn = FunctionDefinition(tag="f", module_name="m", max_inputs=4, batch=Batch(4, 50))
    wire = to_wire(defn)
    assert wire["batch"] == {"max_batch_size": 4, "wait_ms": 50}
    assert definition_from_wire(wire).batch == Batch(4, 50)


def test_a_malformed_definition_is_refused_by_field():
    with pytest.raises(msgspec.ValidationError, match=r"\$\.timeout"):
        definition_from_wire({"tag": "f", "module_name": "m", "timeout": "soon"})
    with pytest.raises(msgspec.ValidationError, match="tag"):
        definition_from_wire({"module_name": "m"})
    with pytest.raises(msgspec.ValidationError, match=r"\$\.max_inputs"):
        settings_from_wire({"max_inputs": [1]})


def test_what_the_control_plane_adds_is_read_too():
    wire = {"tag": "f", "module_name": "m", "app_id": "ap-1", "function_id": "fu-1", "mounts": [["/h", "/c"]],
            "memory_limit_mib": 512, "variant_of": "fu-0", "unknown_later_field": 1}
    defn = definition_from_wire(wire)
    assert (defn.app_id, defn.mounts, defn.memory_limit_mib, defn.variant_of) == ("ap-1", [["/h", "/c"]], 512, "fu-0")
    assert PoolSettings(unbound=True) == settings_from_wire({"unbound": True})
