"""`modal.Sandbox` arguments that are checked before anything starts, and the API surface that is not built."""

from __future__ import annotations

import modal
import pytest

from homeport import _protocol as P
from homeport.exception import InvalidError, UnimplementedError


class _RunningApp:  # what `Sandbox.create(app=...)` reads of an app
    app_id = "ap-test"
    name = "test"


APP = _RunningApp()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"timeout": None}, InvalidError, "only supported for experimental persistent"),
        ({"timeout": 24 * 3600 + 1}, InvalidError, "24 hours"),
        ({"timeout": 0}, InvalidError, "timeout"),
        ({"gpu": ["A100", "H100"]}, InvalidError, "list of GPUs"),
        ({"gpu": "A100"}, UnimplementedError, "gpu"),
        ({"workdir": "relative/dir"}, InvalidError, "absolute"),
        ({"workdir": "/app/../etc"}, InvalidError, "canonical"),
        ({"volumes": {"/data/../etc": None}}, InvalidError, "canonical"),
        ({"volumes": {"/": None}}, InvalidError, "root"),
        ({"block_network": True, "encrypted_ports": [8000]}, InvalidError, "block_network"),
        ({"outbound_cidr_allowlist": "10.0.0.0/8"}, InvalidError, "outbound_cidr_allowlist"),
        ({"outbound_domain_allowlist": [3]}, InvalidError, "outbound_domain_allowlist"),
        ({"block_network": True, "outbound_domain_allowlist": ["example.com"]}, InvalidError, "cannot be combined"),
        ({"region": "us-east"}, UnimplementedError, "region"),
        ({"cloud": "aws"}, UnimplementedError, "cloud"),
        ({"name": "bad name!"}, InvalidError, "Invalid Sandbox name"),
        ({"unencrypted_ports": [70000]}, InvalidError, "ports"),
        ({"readiness_probe": "port 8000"}, InvalidError, "Probe"),
    ],
)
def test_create_checks_its_arguments_first(kwargs, error, match):
    with pytest.raises(error, match=match):
        modal.Sandbox.create(app=APP, **kwargs)


def test_create_needs_an_app_outside_a_container(monkeypatch):
    monkeypatch.delenv("HOMEPORT_IS_REMOTE", raising=False)
    with pytest.raises(InvalidError, match=r"App\.lookup"):
        modal.Sandbox.create()


def test_create_refuses_an_app_that_is_not_running():
    with pytest.raises(InvalidError, match="not running"):
        modal.Sandbox.create(app=modal.App("never-run"))


def test_probes():
    assert modal.Probe.with_tcp(8080).tcp_port == 8080
    assert modal.Probe.with_exec("true", interval_ms=5).exec_argv == ("true",)
    for bad in (lambda: modal.Probe.with_tcp(0), lambda: modal.Probe.with_tcp(80, interval_ms=0),
                lambda: modal.Probe.with_exec()):
        with pytest.raises(InvalidError):
            bad()


def test_what_is_not_built_raises_unimplemented_by_name():
    sb = modal.Sandbox._from_info(P.SandboxInfo(sandbox_id="sb-x", app_id="ap-x"))
    for name in ("snapshot_filesystem", "snapshot_directory", "mount_image", "unmount_image", "create_connect_token",
                 "open", "ls", "mkdir", "rm"):
        with pytest.raises(UnimplementedError, match=name):
            getattr(sb, name)()
    with pytest.raises(UnimplementedError, match="watch"):
        sb.filesystem.watch("/tmp")
    with pytest.raises(InvalidError):
        modal.Sandbox()


def test_module_paths_are_modals():
    from homeport.container_process import ContainerProcess
    from homeport.exception import SandboxTerminatedError, SandboxTimeoutError, TimeoutError
    from homeport.io_streams import StreamReader, StreamWriter
    from homeport.sandbox import Sandbox
    from homeport.stream_type import StreamType

    assert Sandbox is modal.Sandbox and ContainerProcess and StreamReader and StreamWriter
    assert {StreamType.PIPE, StreamType.DEVNULL, StreamType.STDOUT}
    assert issubclass(SandboxTimeoutError, TimeoutError) and issubclass(SandboxTerminatedError, modal.Error)


def test_tunnel():
    t = modal.Tunnel("127.0.0.1", 5000, "127.0.0.1", 5000)
    assert t.url == "http://127.0.0.1:5000" and t.tcp_socket == ("127.0.0.1", 5000)
    with pytest.raises(InvalidError):
        _ = modal.Tunnel("127.0.0.1", 5000).tcp_socket
    with pytest.raises(UnimplementedError, match="tls_socket"):
        _ = t.tls_socket


def test_the_sandbox_service_answers_a_malformed_operation_as_invalid_naming_the_field():
    """Past the gateway too (an operation handed to it as it came): never a KeyError."""
    import asyncio

    from homeport.server.sandboxes import Sandboxes

    service = Sandboxes(None, None, None, None, None)  # type: ignore[arg-type] - refused before it reaches the control plane
    for msg, named in (({"t": P.SANDBOX, "op": "exec", "sandbox": "sb-1"}, "'argv' is missing"),
                       ({"t": P.SANDBOX, "op": "main_read", "sandbox": "sb-1", "fd": "1"}, "'fd'")):
        with pytest.raises(InvalidError, match=named):
            asyncio.run(service.op(None, msg))  # type: ignore[arg-type]
