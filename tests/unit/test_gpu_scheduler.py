"""GPU placement in the pure scheduler, with fake inventories: matching, fallback, waiting, infeasible."""

import itertools

import pytest

from homeport.server.core import gpus as G
from homeport.server.core.scheduler import FailInputs, PoolConfig, Scheduler, StartContainer, StopContainer


def dev(index, model, name=None, memory_mib=81559):
    return G.GpuDevice(index, f"GPU-{model or 'x'}-{index}", name or f"NVIDIA {model}", memory_mib, model)


def inventory(*models):
    return tuple(dev(i, m) for i, m in enumerate(models))


def make(gpu, devices, **cfg):
    ids = (f"c{i}" for i in itertools.count(1))
    s = Scheduler(lambda: next(ids), gpus=devices)
    s.add_pool("p", PoolConfig(gpu=G.parse_request(gpu), **cfg), 0.0)
    return s


def starts(out):
    return [i for i in out if isinstance(i, StartContainer)]


@pytest.mark.parametrize("name,memory,model", [
    ("Tesla T4", 15360, "T4"),
    ("NVIDIA L4", 23034, "L4"),
    ("NVIDIA A10G", 23028, "A10"),
    ("NVIDIA A10", 23028, "A10"),
    ("NVIDIA A100-SXM4-40GB", 40960, "A100-40GB"),
    ("NVIDIA A100-SXM4-80GB", 81920, "A100-80GB"),
    ("NVIDIA A100 80GB PCIe", 81920, "A100-80GB"),
    ("NVIDIA A100-PCIE", 81920, "A100-80GB"),  # no size in the name: the memory decides
    ("NVIDIA L40S", 46068, "L40S"),
    ("NVIDIA H100 80GB HBM3", 81559, "H100"),
    ("NVIDIA H100 NVL", 95830, "H100"),
    ("NVIDIA H200", 143771, "H200"),
    ("NVIDIA B200", 183359, "B200"),
    ("NVIDIA RTX PRO 6000 Blackwell Server Edition", 97887, "RTX-PRO-6000"),
    ("NVIDIA GeForce RTX 4090", 24564, None),
])
def test_nvml_names_map_to_modal_types(name, memory, model):
    assert G.modal_model(name, memory) == model


# request, the machine's models, the models the first container gets (None: it cannot start now)
PLACEMENT = [
    (["A100"], ["A100-80GB"], ["A100-80GB"]),             # 40 GB may run on 80 GB
    (["A100-40GB"], ["A100-80GB"], None),                  # strict
    (["A100-80GB"], ["A100-40GB"], None),                  # strict
    (["A100"], ["A100-80GB", "A100-40GB"], ["A100-40GB"]),  # the exact model first
    (["H100"], ["H200"], ["H200"]),                        # H100 may run on an H200
    (["H100!"], ["H200"], None),                           # never
    (["H100"], ["H200", "H100"], ["H100"]),
    (["B200+"], ["B300"], ["B300"]),
    (["B200"], ["B300"], None),
    (["A10G"], ["A10"], ["A10"]),                          # aliases
    (["a10"], ["A10"], ["A10"]),
    (["RTX-PRO-6000"], ["RTX-PRO-6000"], ["RTX-PRO-6000"]),
    (["ANY"], [None], [None]),                             # any GPU, even a model Modal has no name for
    (["ANY:2"], ["T4", "H100"], ["T4", "H100"]),
    (["H100", "A100-40GB:2"], ["A100-40GB", "A100-40GB"], ["A100-40GB", "A100-40GB"]),  # fallback, own count
    (["H100:2", "T4"], ["H100", "T4"], ["T4"]),           # one H100 is not two
    (["T4"], [], None),
]


@pytest.mark.parametrize("gpu,models,got", PLACEMENT)
def test_placement_follows_modal_upgrade_rules_and_fallback_order(gpu, models, got):
    devices = inventory(*models)
    s = make(gpu, devices)
    out = s.submit("p", [1], 0.0)
    if got is None:
        assert not starts(out)
        fail = [i for i in out if isinstance(i, FailInputs)]
        assert len(fail) == 1 and G.describe_request(G.parse_request(gpu)) in fail[0].reason
        return
    (start,) = starts(out)
    by_uuid = {d.uuid: d.model for d in devices}
    assert [by_uuid[u] for u in start.gpus] == got


def test_containers_wait_while_the_only_gpu_is_held_and_start_when_it_is_freed():
    s = make(["ANY"], inventory("H100"), scaledown_window=60.0)
    out = s.submit("p", [1, 2], 0.0)
    (first,) = starts(out)
    assert s.pools["p"].waiting_for_gpu == 0  # plan is capped to the one device: nothing waits
    s.container_ready(first.container, 0.1)
    # Another pool asks for the same device: it waits, it does not fail.
    s.add_pool("q", PoolConfig(gpu=G.parse_request(["H100"])), 0.2)
    out = s.submit("q", [3], 0.2)
    assert not starts(out) and not [i for i in out if isinstance(i, FailInputs)]
    assert s.pools["q"].pending == s.pools["q"].waiting_for_gpu == 1
    # The first container is busy: it is not stopped for the waiting pool.
    assert not [i for i in out if isinstance(i, StopContainer)]
    out = s.inputs_done(first.container, [1], 1.0, 1.1)
    out = s.inputs_done(first.container, [2], 1.0, 2.1)
    # Now idle: stopped to free the device, which the other pool gets once it has exited.
    out = s.submit("q", [], 2.2)
    assert [i.container for i in out if isinstance(i, StopContainer)] == [first.container]
    assert not starts(out)  # it still holds the device while it stops
    out = s.container_exited(first.container, 2.5, "stopped")
    (second,) = starts(out)
    assert second.pool == "q" and second.gpus == first.gpus
    assert s.pools["q"].waiting_for_gpu == 0


def test_min_containers_idle_holder_is_not_stopped_for_another_pool():
    s = make(["T4"], inventory("T4"), min_containers=1)
    (c,) = s.containers.values()
    s.container_ready(c.id, 0.1)
    s.add_pool("q", PoolConfig(gpu=G.parse_request(["T4"])), 0.2)
    out = s.submit("q", [1], 0.2)
    assert not starts(out) and not [i for i in out if isinstance(i, StopContainer)]
    assert s.pools["q"].waiting_for_gpu == 1


def test_autoscaling_never_plans_more_containers_than_matching_devices():
    s = make(["A100:2"], inventory("A100-40GB", "A100-80GB", "A100-80GB", "A100-40GB", "T4"))
    out = s.submit("p", list(range(50)), 0.0)
    st = starts(out)
    assert len(st) == 2
    held = [u for i in st for u in i.gpus]
    assert len(held) == len(set(held)) == 4 and all("T4" not in u for u in held)


def test_devices_are_exclusive_between_pools_and_fallback_uses_the_next_type():
    s = make(["H100"], inventory("H100", "A100-40GB"))
    (a,) = starts(s.submit("p", [1], 0.0))
    s.add_pool("q", PoolConfig(gpu=G.parse_request(["H100", "A100"])), 0.0)
    (b,) = starts(s.submit("q", [2], 0.0))
    assert a.gpus == ("GPU-H100-0",) and b.gpus == ("GPU-A100-40GB-1",)
    assert s.gpus_busy() == {"GPU-H100-0", "GPU-A100-40GB-1"}


def test_a_request_no_device_can_satisfy_fails_at_call_time_naming_request_and_machine():
    s = make(["B200"], inventory("H200"))
    (fail,) = s.submit("p", [1], 0.0)
    assert isinstance(fail, FailInputs)
    assert 'gpu="B200"' in fail.reason and "NVIDIA H200" in fail.reason
    s = make(["H100", "A100:2"], ())
    (fail,) = s.submit("p", [1], 0.0)
    assert 'gpu=["H100", "A100:2"]' in fail.reason and "no GPUs" in fail.reason


def test_cpu_pools_are_unaffected_by_the_gpu_inventory():
    ids = (f"c{i}" for i in itertools.count(1))
    s = Scheduler(lambda: next(ids), gpus=())
    s.add_pool("cpu", PoolConfig(), 0.0)
    (st,) = starts(s.submit("cpu", [1], 0.0))
    assert st.gpus == ()


def test_max_containers_counts_fallback_entries_on_what_earlier_ones_left():
    devices = inventory("H100", "H100", "H100", "T4")
    assert G.max_containers(G.parse_request(["H100:2", "T4"]), devices) == 2
    assert G.max_containers(G.parse_request(["ANY"]), devices) == 4
    assert G.max_containers(G.parse_request(["L4"]), devices) == 0
