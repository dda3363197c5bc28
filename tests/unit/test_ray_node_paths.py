"""What a Ray node must see of the control plane's disk to run a container, and the error naming what it lacks;
where volumes live when containers run on more than one machine."""


import pytest

from homeport import _protocol as P
from homeport.backends import ContainerSpec, Mount
from homeport.backends.ray._paths import missing_on_node, needed_paths
from homeport.server._main import volume_root


def spec(**kw) -> ContainerSpec:
    return ContainerSpec(container_id="c1", app_id="a1", function_tag="f",
                         argv=("/state/images/im-1/venv/bin/python", "-m", "homeport.runtime"), **kw)


def test_a_node_that_sees_every_path_runs_the_container():
    s = spec(env={P.ENV_RUNTIME_PATH: "/state/images/runtime"}, mounts=(Mount("/state/shared/volumes/vo-1", "/data"),))
    assert [p for _, p in needed_paths(s)] == ["/state/images/im-1/venv/bin/python", "/state/images/runtime",
                                                "/state/shared/volumes/vo-1"]
    assert missing_on_node(s, "node1", exists=lambda p: True) is None


def test_a_node_without_the_image_directory_names_the_path_and_the_node():
    problem = missing_on_node(spec(), "node1", exists=lambda p: False)
    assert "Ray node node1" in problem and "/state/images/im-1/venv/bin/python" in problem
    assert "interpreter" in problem and P.ENV_SHARED_ROOT in problem


def test_a_node_without_a_volume_names_the_volume_directory():
    s = spec(mounts=(Mount("/state/shared/volumes/vo-1", "/data"),))
    problem = missing_on_node(s, "n2", exists=lambda p: "volumes" not in p)
    assert "/state/shared/volumes/vo-1" in problem and "mounted at /data" in problem


class _Backend:
    def __init__(self, spans: bool) -> None:
        self.spans_machines = spans
        self.name = "ray" if spans else "local"


def test_volumes_on_a_cluster_without_a_shared_root_are_refused_saying_how(tmp_path, monkeypatch):
    monkeypatch.delenv(P.ENV_SHARED_ROOT, raising=False)
    _, problem = volume_root(tmp_path, _Backend(spans=True))
    assert problem is not None and P.ENV_SHARED_ROOT in problem and "every node" in problem
    assert volume_root(tmp_path, _Backend(spans=False)) == (tmp_path / "volumes", None)


def test_a_shared_root_inside_the_state_directory_holds_the_volumes(tmp_path, monkeypatch):
    (tmp_path / "shared").mkdir()
    monkeypatch.setenv(P.ENV_SHARED_ROOT, str(tmp_path / "shared"))
    assert volume_root(tmp_path, _Backend(spans=True)) == (tmp_path.resolve() / "shared" / "volumes", None)


@pytest.mark.parametrize("where", ["outside", "state", "missing"])
def test_a_shared_root_where_containers_would_see_other_apps_volumes_is_refused(tmp_path, monkeypatch, where):
    state = tmp_path / "state"
    state.mkdir()
    (tmp_path / "outside").mkdir()
    path = {"outside": tmp_path / "outside", "state": state, "missing": state / "nope"}[where]
    monkeypatch.setenv(P.ENV_SHARED_ROOT, str(path))
    with pytest.raises(SystemExit) as info:
        volume_root(state, _Backend(spans=True))
    assert P.ENV_SHARED_ROOT in str(info.value)
    assert str(path) in str(info.value)
