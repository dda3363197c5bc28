"""A Ray node builds a container's image in its own cache, by the control plane's content hashes, once per node
however many containers start at once; what only the control plane can build is refused, naming it."""

import asyncio
import sys
from pathlib import Path

import pytest

from homeport import _protocol as P
from homeport.backends import ContainerSpec, ImageSource, Mount
from homeport.backends.ray._images import (
    NodeImages,
    NodeImageUnbuildable,
    missing_files,
    relocate,
    unbuildable,
)
from homeport.image_builder import ImageBuilder, node_steps


def spec(root: str, steps=(), **kw) -> ContainerSpec:
    venv = f"{root}/layers/k1/venv"
    return ContainerSpec(
        container_id="c1", app_id="a1", function_tag="f", argv=(f"{venv}/bin/python", "-m", "homeport.runtime"),
        env={"VIRTUAL_ENV": venv, "PATH": f"{venv}/bin:/usr/bin", P.ENV_RUNTIME_PATH: f"{root}/runtime/r1"},
        image=ImageSource("im-1", root, tuple(steps)), **kw)


def test_relocate_moves_the_images_paths_to_the_nodes_cache_and_leaves_staged_files_alone():
    s = spec("/cp/images", mounts=(Mount("/cp/images/layers/k2/fs/app", "/app"), Mount("/cp/images/mounts/m1/fs/x", "/x"),
                                   Mount("/shared/volumes/vo-1", "/data")), cwd="/cp/images/workdirs/im-1/w")
    r = relocate(s, "/node/cache", "/node/cache/runtime/r9", ("/node/site/homeport",))
    assert r.argv[0] == "/node/cache/layers/k1/venv/bin/python"
    assert r.env["VIRTUAL_ENV"] == "/node/cache/layers/k1/venv" and r.env["PATH"].startswith("/node/cache/layers/k1/venv/bin:")
    assert r.env[P.ENV_RUNTIME_PATH] == "/node/cache/runtime/r9"
    assert [m.source for m in r.mounts] == ["/node/cache/layers/k2/fs/app", "/cp/images/mounts/m1/fs/x",
                                            "/shared/volumes/vo-1"]
    assert r.cwd == "/node/cache/workdirs/im-1/w" and r.code[-1] == "/node/site/homeport"


def test_steps_only_the_control_plane_builds_are_refused_by_name_and_secrets_never_leave_it():
    steps = node_steps([{"kind": "debian_slim", "interpreter": {"path": "/usr/bin/python3", "version": "3.12"}},
                        {"kind": "apt_install", "packages": ["curl"]}])
    assert steps[1] == {"kind": "apt_install", "_not_portable": True}
    why = unbuildable(ImageSource("im-1", "/cp", tuple(steps)))
    assert why.startswith("UnimplementedError") and "apt_install" in why and "im-1" in why
    steps = node_steps([{"kind": "pip_install", "packages": ["x"], "_secret_env": {"TOKEN": "s3cret"}}])
    assert "s3cret" not in repr(steps)
    assert "secrets" in unbuildable(ImageSource("im-1", "/cp", tuple(steps)))
    with pytest.raises(NodeImageUnbuildable, match="run_function"):
        asyncio.run(NodeImages("/nonexistent").ensure(spec("/cp", node_steps([{"kind": "run_function", "f": b"x"}])),
                                                      lambda line, fd: None))


def test_files_copied_into_an_image_must_be_seen_by_the_node():
    source = ImageSource("im-1", "/cp", ({"kind": "add_local_dir", "_files": [["/app/a.py", "/home/u/a.py"]]},))
    assert missing_files(source, exists=lambda p: True) is None
    why = missing_files(source, exists=lambda p: False)
    assert why.startswith("UnimplementedError") and "/home/u/a.py" in why and "add_local_dir" in why


def test_containers_starting_at_once_on_a_node_build_its_image_once_under_the_same_layer_names(tmp_path):
    v = sys.version_info
    request = {"steps": [{"kind": "debian_slim", "python_version": f"{v.major}.{v.minor}"},
                         {"kind": "env", "vars": {"MARK": "1"}}]}
    control = ImageBuilder(tmp_path / "control")

    async def scenario():
        image = control.get(await control.build(request))
        node = NodeImages(str(tmp_path / "node"))
        logs: list[str] = []
        a, b = (ContainerSpec(container_id=f"c{i}", app_id="a1", function_tag="f", argv=image.argv(),
                              env=image.environ({}, control.runtime_path()),
                              image=ImageSource(image.image_id, str(control.root), tuple(image.steps)))
                for i in range(2))
        a, b = await asyncio.gather(node.ensure(a, lambda line, fd: logs.append(line)),
                                    node.ensure(b, lambda line, fd: logs.append(line)))
        return image, a, b, logs

    image, a, b, logs = asyncio.run(scenario())
    assert sum(line.startswith("Building image") for line in logs) == 1  # the other found it built
    assert a.argv == b.argv and a.env == b.env
    assert Mount(str(tmp_path / "node"), str(tmp_path / "node"), read_only=True) in a.mounts  # not theirs to change
    node_venv = Path(a.env["VIRTUAL_ENV"])
    assert node_venv.is_relative_to(tmp_path / "node") and node_venv.name == "venv"
    # The same layer names as the control plane's, each built on the node (its own uv venv).
    assert sorted(p.name for p in (tmp_path / "node" / "layers").iterdir() if not p.name.startswith(".")) == \
        sorted(p.name for p in (tmp_path / "control" / "layers").iterdir() if not p.name.startswith("."))
    assert (node_venv / "pyvenv.cfg").exists() and Path(image.venv).parent.name == node_venv.parent.name
    assert a.argv[0] == str(node_venv / "bin" / "python") and a.env["MARK"] == "1"
    runtime = a.env[P.ENV_RUNTIME_PATH]
    assert runtime.startswith(str(tmp_path / "node")) and (Path(runtime) / "homeport").exists()
