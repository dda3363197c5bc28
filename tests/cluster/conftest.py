"""A Ray cluster of three nodes on this machine (loopback only), and a control plane that runs its
containers on it. Every Ray process the cluster started is stopped with it."""

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Keep every Ray address on loopback: without this Ray swaps 127.0.0.1 for the machine's own address
# (read when ray is imported, so set before).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# A raylet waits this long for its agents to start (they are slow to on a loaded 2-core machine).
os.environ.setdefault("RAY_agent_register_timeout_ms", "120000")
ray = pytest.importorskip("ray", reason="the Ray backend's tests need ray (pip install -e '.[test]')")

APPS = Path(__file__).parent / "apps"
NODE = {"object_store_memory": 78 * 2**20, "node_ip_address": "127.0.0.1"}


def _ports() -> dict[str, int]:
    """Fixed ports for a node's agents. Left to Ray (0), the raylet waits 15 s for each agent to write its
    port to a file, and on a loaded 2-core machine the Python agents start slower than that: the node
    dies at start-up ("Timed out waiting for file .../metrics_agent_port_...")."""
    import socket

    names = ("metrics_agent_port", "metrics_export_port", "dashboard_agent_listen_port", "runtime_env_agent_port")
    socks = [socket.socket() for _ in names]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return {name: s.getsockname()[1] for name, s in zip(names, socks)}
    finally:
        for s in socks:
            s.close()


def _add_node(cluster, **kwargs):
    """`cluster.add_node`, tried again when the node dies starting: on a loaded machine its raylet may
    give up on its agents (a Ray start-up wait of fixed length); a node that failed stops at exit."""
    for attempt in range(3):
        try:
            return cluster.add_node(**NODE, **_ports(), **kwargs)
        except Exception:
            if attempt == 2:
                raise


def _node_processes(cluster) -> list:
    """The processes of every node of `cluster` now (raylets, stores, agents; workers are their children)."""
    import psutil

    found = []
    for node in cluster.list_all_nodes():
        for infos in node.all_processes.values():
            for info in infos:
                with contextlib.suppress(psutil.NoSuchProcess):
                    found.append(psutil.Process(info.process.pid))
    return found


@pytest.fixture(scope="module")
def ray_cluster(held_processes):
    from ray.cluster_utils import Cluster

    # Ray starts a dozen Python processes per node, which must import ray's modules in time (a raylet gives
    # its agents 15 s): let them cache bytecode where the environment says not to (PYTHONDONTWRITEBYTECODE).
    no_bytecode = os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    cluster = Cluster()
    # Each node builds images in a cache of its own, as on separate machines: none is served by another's.
    caches = Path(tempfile.mkdtemp(prefix="hp-node-images-", dir="/tmp"))
    cluster.image_caches = {}

    def node(name: str, **kwargs):
        cache = cluster.image_caches[name] = caches / name
        return _add_node(cluster, num_cpus=1, labels={"homeport.io/region": name},
                         env_vars={"HOMEPORT_NODE_IMAGES": str(cache)}, **kwargs)

    try:
        # Nodes a test adds stay with the cluster (`add_node`): this fixture's to stop, not the test's.
        with held_processes.processes(lambda: _node_processes(cluster)):
            nodes = {
                "us-east-1": node("us-east-1", include_dashboard=False,
                                  # A lost node is noticed within seconds, not the default half minute.
                                  _system_config={"health_check_period_ms": 1000,
                                                  "health_check_failure_threshold": 5}),
                "eu-west-1": node("eu-west-1"),
                "us-west-2": node("us-west-2"),
            }
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, namespace="homeport-tests", log_to_driver=False,
                     logging_level="ERROR")
            cluster.nodes_by_name = nodes
            yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(caches, ignore_errors=True)
        if no_bytecode is not None:
            os.environ["PYTHONDONTWRITEBYTECODE"] = no_bytecode


@pytest.fixture(scope="module")
def ray_platform(ray_cluster):
    from homeport import _protocol as P
    from homeport.testing import Platform

    saved = {k: os.environ.get(k) for k in (P.ENV_BACKEND, P.ENV_RAY_ADDRESS, P.ENV_LISTEN, P.ENV_SHARED_ROOT,
                                            "HOMEPORT_CPU")}
    os.environ[P.ENV_BACKEND] = "ray"
    # The control plane's own machine offers containers one core: on Ray the cluster's count instead.
    os.environ["HOMEPORT_CPU"] = "1"
    os.environ[P.ENV_RAY_ADDRESS] = ray_cluster.address
    os.environ[P.ENV_LISTEN] = "127.0.0.1:0"  # containers connect over TCP, on loopback only
    # Volumes on a cluster live where every node sees them: here, a directory in the state directory
    # (what an operator mounts a shared file system on).
    state = Path(tempfile.mkdtemp(prefix="hp-", dir="/tmp"))
    (state / "shared").mkdir()
    os.environ[P.ENV_SHARED_ROOT] = str(state / "shared")
    try:
        with Platform(str(state)) as platform:
            yield platform
    finally:
        shutil.rmtree(state, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def ray_app(ray_platform):
    from homeport.testing import running

    with running("ray_app", path=APPS) as ray_app:
        yield ray_app


@pytest.fixture
def region_of(ray_cluster):
    """The region label of a node, by id."""

    def region(node_id: str) -> str | None:
        for node in ray.nodes():
            if node["NodeID"] == node_id:
                return (node.get("Labels") or {}).get("homeport.io/region")
        raise AssertionError(f"no Ray node {node_id}")

    return region


@pytest.fixture
def add_node(ray_cluster, request):
    """Add a node of `num_cpus` cores (in `region`) to the module's cluster; it stops with the cluster."""

    def add(region: str | None = None, labels: dict[str, str] | None = None, num_cpus: int = 1, **kwargs):
        labels = {**(labels or {}), **({"homeport.io/region": region} if region else {})}
        cache = tempfile.mkdtemp(prefix="hp-node-images-", dir="/tmp")
        request.addfinalizer(lambda: shutil.rmtree(cache, ignore_errors=True))
        node = _add_node(ray_cluster, num_cpus=num_cpus, labels=labels, env_vars={"HOMEPORT_NODE_IMAGES": cache}, **kwargs)
        ray_cluster.wait_for_nodes()
        return node

    return add
