"""Control plane addresses: a Unix socket path, or tcp://HOST:PORT for containers on other machines."""

import pytest

from homeport import _address, _config
from homeport import _protocol as P


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:7000", ("127.0.0.1", 7000)),
    ("node-1.cluster:0", ("node-1.cluster", 0)),
    ("[::1]:7000", ("::1", 7000)),
])
def test_host_and_port(text, expected):
    assert _address.split_host_port(text) == expected


def test_a_host_alone_takes_the_default_port():
    assert _address.split_host_port("10.0.0.5", default_port=0) == ("10.0.0.5", 0)
    assert _address.split_host_port("::1", default_port=0) == ("::1", 0)


@pytest.mark.parametrize("text", ["127.0.0.1", ":7000", "host:http", "host:70000", "host:-1"])
def test_malformed_listen_addresses_are_refused(text):
    with pytest.raises(ValueError):
        _address.split_host_port(text)


def test_tcp_addresses_round_trip():
    assert _address.tcp("127.0.0.1", 7000) == "tcp://127.0.0.1:7000"
    assert _address.tcp_target(_address.tcp("::1", 7000)) == ("::1", 7000)
    assert _address.is_tcp("tcp://h:1") and not _address.is_tcp("/tmp/hp/server.sock")


def test_a_tcp_server_address_is_what_clients_connect_to_and_admins_keep_the_socket(monkeypatch, tmp_path):
    monkeypatch.setenv(P.ENV_STATE_DIR, str(tmp_path))
    monkeypatch.setenv(P.ENV_SERVER_ADDRESS, "tcp://127.0.0.1:7000")
    assert _config.client_address() == "tcp://127.0.0.1:7000"
    assert _config.server_address() == tmp_path.resolve() / "server.sock"
    monkeypatch.setenv(P.ENV_SERVER_ADDRESS, str(tmp_path / "other.sock"))
    assert _config.client_address() == str(tmp_path / "other.sock") == str(_config.server_address())


def test_connecting_where_nothing_listens_is_an_os_error(tmp_path):
    with pytest.raises(OSError):
        _address.connect(str(tmp_path / "none.sock"))
