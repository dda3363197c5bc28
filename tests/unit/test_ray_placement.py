"""Placement on a Ray cluster: Modal's cpu/memory/gpu/region requests as Ray actor options, and requests
no node can ever satisfy refused with what the cluster has."""

import pytest

from homeport.backends import Placement
from homeport.backends.ray._placement import (
    ACCELERATOR_LABEL,
    REGION_LABEL,
    Unplaceable,
    actor_options,
    gpu_options,
)

GiB = 2**30


def node(cpu=4, mem_gib=16, gpu=0, accel=None, region=None, alive=True, free=None):
    labels = {}
    if accel:
        labels[ACCELERATOR_LABEL] = accel
    if region:
        labels[REGION_LABEL] = region
    res = {"CPU": cpu, "memory": mem_gib * GiB, **({"GPU": gpu} if gpu else {})}
    out = {"Alive": alive, "Resources": res, "Labels": labels}
    if free is not None:
        out["available"] = free
    return out


CLUSTER = [
    node(region="us-east-1"),
    node(region="us-west-2", gpu=8, accel="H200"),
    node(region="eu-west-1", gpu=2, accel="A100-80G"),
    node(region="eu-central-1", gpu=1, accel="T4"),
]


def test_cpu_and_memory_become_ray_resources():
    opts = actor_options(Placement(cpu=2.0, memory_mib=1024), CLUSTER)
    assert opts == {"num_cpus": 2.0, "memory": 1024 * 2**20}


@pytest.mark.parametrize(
    ("gpu", "selector"),
    [
        ("H100", "in(H100,H200)"),  # may be upgraded to an H200
        ("h100", "in(H100,H200)"),  # any case
        ("A100", "in(A100,A100-40G,A100-80G)"),  # 40 GB asked, 80 GB welcome
        ("A100-80GB:2", "in(A100-80G)"),
        ("T4", "in(T4)"),
    ],
)
def test_gpu_types_follow_modals_upgrade_rules(gpu, selector):
    opts = actor_options(Placement(gpu=gpu), CLUSTER)
    assert opts["label_selector"] == {ACCELERATOR_LABEL: selector}
    assert opts["num_gpus"] == gpu_options(gpu)[0][1]


def test_strict_types_are_not_upgraded():
    with pytest.raises(Unplaceable, match="H100!"):
        actor_options(Placement(gpu="H100!"), CLUSTER)  # only H200s here: H100! never runs on one
    with pytest.raises(Unplaceable):
        actor_options(Placement(gpu="A100-40GB"), CLUSTER)


def test_a_gpu_list_is_an_ordered_fallback():
    opts = actor_options(Placement(gpu=["B200", "H100", "A100"]), CLUSTER)  # no B200: dropped as infeasible
    assert opts["label_selector"] == {ACCELERATOR_LABEL: "in(H100,H200)"}
    assert opts["fallback_strategy"] == [{"label_selector": {ACCELERATOR_LABEL: "in(A100,A100-40G,A100-80G)"}}]


def test_fallback_with_different_counts_picks_what_fits_now():
    cluster = [node(gpu=8, accel="H100", free={"CPU": 4, "memory": 16 * GiB, "GPU": 0}),
               node(gpu=2, accel="A100-80G", free={"CPU": 4, "memory": 16 * GiB, "GPU": 2})]
    opts = actor_options(Placement(gpu=["H100:4", "A100-80GB:2"]), cluster)
    assert opts["num_gpus"] == 2 and opts["label_selector"] == {ACCELERATOR_LABEL: "in(A100-80G)"}


def test_regions_are_a_set_and_broad_names_cover_narrow_ones():
    opts = actor_options(Placement(regions=("us",)), CLUSTER)
    assert opts["label_selector"] == {REGION_LABEL: "in(us-east-1,us-west-2)"}
    opts = actor_options(Placement(regions=("eu-west-1", "ap-south-1")), CLUSTER)
    assert opts["label_selector"] == {REGION_LABEL: "in(eu-west-1)"}
    opts = actor_options(Placement(gpu="H100", regions=("us",)), CLUSTER)
    assert opts["label_selector"] == {ACCELERATOR_LABEL: "in(H100,H200)", REGION_LABEL: "in(us-east-1,us-west-2)"}


def test_what_no_node_can_hold_fails_naming_what_the_cluster_has():
    with pytest.raises(Unplaceable, match=r"region=\['ap'\] matches no node.*eu-central-1.*us-west-2"):
        actor_options(Placement(regions=("ap",)), CLUSTER)
    with pytest.raises(Unplaceable, match=r"GPU T4:1.*region eu-west-1"):
        actor_options(Placement(gpu="T4", regions=("eu-west",)), CLUSTER)
    with pytest.raises(Unplaceable, match="64 CPU"):
        actor_options(Placement(cpu=64), CLUSTER)
    with pytest.raises(Unplaceable, match="no node offers"):
        actor_options(Placement(), [node(alive=False)])


def test_any_gpu_needs_only_a_count():
    assert actor_options(Placement(gpu="any:2"), CLUSTER) == {
        "num_cpus": 0.125, "memory": 128 * 2**20, "num_gpus": 2}


def test_the_clusters_capacity_is_the_sum_of_its_nodes_resources():
    from homeport.backends.ray._placement import cluster_capacity

    assert cluster_capacity({"CPU": 7.0, "memory": 3 * 2**30, "GPU": 1.0}) == (7.0, 3072)
    assert cluster_capacity({}) == (0.0, 0)


def test_web_endpoints_and_sandboxes_stay_on_the_control_planes_node_or_fail_naming_why():
    from homeport import _protocol as P
    from homeport.backends.ray._placement import home_options, pinned_home

    assert pinned_home({"PATH": "/bin"}) is None
    web = pinned_home({P.ENV_WEB_SOCKET: "/state/web/ta-1"})
    assert "web endpoint" in web and "Unix socket" in web
    assert "Sandbox" in pinned_home({P.ENV_SANDBOX: "{}"})
    home = node(region="us-east-1")
    # Its requests are checked against that node alone; no label selector sends it elsewhere.
    assert home_options(Placement(cpu=1.0, regions=("us",)), home, web) == {"num_cpus": 1.0, "memory": 128 * 2**20}
    with pytest.raises(Unplaceable) as info:  # a region (or a GPU) the control plane's node does not have
        home_options(Placement(regions=("eu",)), home, web)
    message = str(info.value)
    assert message.startswith("UnimplementedError") and "web endpoint" in message and "eu" in message
    with pytest.raises(Unplaceable, match=r"UnimplementedError.*Sandbox.*H100"):
        home_options(Placement(gpu=(("H100", 1),)), home, pinned_home({P.ENV_SANDBOX: "{}"}))
