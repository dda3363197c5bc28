"""The Ray backend on a three-node Ray cluster on this machine: containers are Ray actors placed by region
labels, and calls, maps, generators and classes work as on the local backend."""

import json
from pathlib import Path

import pytest

from homeport.testing import homeport_cli

# Starting three Ray nodes takes tens of seconds on a loaded 2-core machine: the first test pays it.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_region_picks_a_node_of_that_region(ray_app, region_of):
    assert region_of(ray_app.in_europe.remote()) == "eu-west-1"  # "eu" covers eu-west-1
    assert region_of(ray_app.in_us_east.remote()) == "us-east-1"  # one of a set; ap-south-1 has no node


def test_container_list_shows_each_containers_node(ray_app):
    node = ray_app.in_europe.remote()
    rows = json.loads(homeport_cli("container", "list", "--json").stdout)
    nodes = {r["node"] for r in rows if r["function"] == "in_europe"}
    assert nodes == {node}


def test_a_region_no_node_has_fails_with_what_the_cluster_has(ray_app):
    with pytest.raises(Exception) as info:
        ray_app.nowhere.remote()
    message = str(info.value)
    assert "ap-south" in message and "matches no node" in message
    assert "eu-west-1" in message and "us-east-1" in message


def test_calls_maps_generators_and_classes_run_on_ray(ray_app):
    assert ray_app.square.remote(7) == 49
    assert sum(ray_app.square.map(range(50))) == sum(x * x for x in range(50))
    assert list(ray_app.countdown.remote_gen(3)) == [3, 2, 1]
    greeting = ray_app.Greeter().greet.remote("ray")
    assert greeting.startswith("hello from ") and greeting.endswith(", ray")


def test_server_status_names_the_ray_backend(ray_app):
    out = homeport_cli("server", "status")
    assert out.returncode == 0 and "backend ray" in out.stdout


def test_containers_reach_the_control_plane_over_tcp_and_call_other_functions(ray_app):
    assert ray_app.address.remote().startswith("tcp://127.0.0.1:")
    assert ray_app.calls_another.remote(4) == (16, [0, 1, 4, 9])


def test_volumes_live_under_the_shared_root_and_containers_see_only_their_own(ray_app, ray_platform):
    ray_app.write.remote("greeting", "hello across nodes")
    assert ray_app.read.remote("greeting") == "hello across nodes"  # written in eu-west-1, read in us-east-1
    shared = ray_platform.state_dir / "shared" / "volumes"
    assert [p.read_text() for p in shared.glob("*/greeting")] == ["hello across nodes"]
    assert ray_app.peek.remote(str(shared)) in ([], "FileNotFoundError", "PermissionError")  # not other volumes


def test_a_gpu_request_runs_on_the_node_with_that_accelerator_and_sees_its_gpu(ray_app, add_node):
    gpu_node = add_node(num_gpus=1, labels={"ray.io/accelerator-type": "H100"})
    where, visible = ray_app.on_gpu.remote()
    assert where == gpu_node.node_id and visible == "0"
    with pytest.raises(Exception) as info:  # no A100 anywhere: refused at once, saying what there is
        ray_app.on_a100.remote()
    assert "A100" in str(info.value) and "H100" in str(info.value)


def test_a_node_builds_the_image_in_its_own_cache_and_the_container_runs_that_build(ray_app, ray_cluster):
    where, venv, python, mark = ray_app.image_home.remote()
    assert where == ray_cluster.nodes_by_name["eu-west-1"].node_id and mark == "built on its node"
    cache = ray_cluster.image_caches["eu-west-1"]
    # The container runs the environment its node built (uv ran there: the venv is in that node's cache) ...
    assert venv.startswith(f"{cache}/layers/") and python.startswith(venv + "/")
    assert (Path(venv) / "pyvenv.cfg").exists() and (Path(venv).parent / "layer.json").exists()

    def marked(cache: Path) -> list[Path]:
        return [p for p in cache.glob("layers/*/layer.json") if "HOMEPORT_IMAGE_MARK" in p.read_text()]

    # ... and no other node has the image's last layer: nothing was served by another cache.
    assert len(marked(cache)) == 1
    assert all(not marked(c) for name, c in ray_cluster.image_caches.items() if name != "eu-west-1")
    # A container cannot change the environment the node's other containers run.
    assert ray_app.poison_image.remote() in ("OSError", "PermissionError")
    assert not (Path(venv) / "poisoned").exists()
    # Its build log reached the app's logs, saying which node built it.
    logs = homeport_cli("app", "logs", "on-ray").stdout
    assert f"[node {where[:8]}] Building image" in logs, logs[-2000:]


def test_a_map_runs_as_many_containers_at_once_as_the_cluster_has_cores_not_this_machine(ray_app, add_node):
    """The control plane's machine offers one core (HOMEPORT_CPU=1); a node of four joins the cluster."""
    add_node(region="sa-east-1", num_cpus=4)
    assert list(ray_app.together.map(range(3), kwargs={"k": 3})) == [3, 3, 3]  # three cores' worth at once
    import ray

    from homeport.testing import wait_for

    def capacity() -> str:
        return homeport_cli("server", "status").stdout

    cores = f"Capacity for containers: {ray.cluster_resources()['CPU']:g} cores"  # every node's, 7 or more
    assert wait_for(lambda: cores in capacity(), timeout=30), capacity()


def test_web_endpoints_and_sandboxes_run_on_the_control_planes_node(ray_app):
    import re

    import modal

    from homeport.testing import wait_for

    status = homeport_cli("server", "status").stdout
    home = re.search(r"the control plane's node\s+(\w+)", status).group(1)

    def web_nodes() -> set[str]:
        rows = json.loads(homeport_cli("container", "list", "--json").stdout)
        return {r["node"] for r in rows if r["function"] == "web_where" and r.get("node")}

    assert wait_for(lambda: web_nodes() == {home}, timeout=120), (web_nodes(), home)
    sb = modal.Sandbox.create("sh", "-c", "echo $HOMEPORT_NODE_ID", app=ray_app.app)
    sb.wait()
    assert sb.stdout.read().strip() == home


def test_a_node_lost_during_a_map_loses_no_input(ray_app, ray_cluster, add_node):
    """Runs last: it adds a second node in us-west-2 and removes it while a map runs on both."""
    import threading

    import psutil
    import ray

    from homeport.testing import wait_for

    keeper = ray_cluster.nodes_by_name["us-west-2"]
    doomed = add_node(region="us-west-2")
    results: list = []
    mapped = threading.Thread(target=lambda: results.extend(ray_app.survivor.map(range(150))))
    mapped.start()

    def survivors() -> dict[str, int]:
        rows = json.loads(homeport_cli("container", "list", "--json").stdout)
        return {r["node"]: r["pid"] for r in rows if r["function"] == "survivor" and r.get("state") == "ready"}

    assert wait_for(lambda: {doomed.node_id, keeper.node_id} <= set(survivors()), timeout=120), survivors()
    lost_pid = survivors()[doomed.node_id]
    ray_cluster.remove_node(doomed)
    mapped.join(timeout=180)
    assert not mapped.is_alive()
    assert [r[0] for r in results] == [x * x for x in range(150)]  # every input, in order: 0 lost
    nodes = {r[1] for r in results}
    assert doomed.node_id in nodes and keeper.node_id in nodes  # both ran inputs; the lost one's were rerun
    # The container process the lost node left behind (its actor died, it did not) is disconnected, and ends.
    assert wait_for(lambda: not psutil.pid_exists(lost_pid), timeout=30), f"container {lost_pid} outlived its node"
    assert all(n["Alive"] for n in ray.nodes() if n["NodeID"] == keeper.node_id)
