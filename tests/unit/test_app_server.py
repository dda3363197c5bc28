"""`@app.server` with Modal's rules and parameters, `App.image`, `App.deploy` keywords, and `gpu=` that
fails only the function that asks for it, when it is called."""

import re

import modal
import pytest

from homeport.exception import InvalidError


def _server(app, cls_name="S", **kwargs):
    """A server class with an enter hook, decorated with `@app.server(**kwargs)`."""

    class S:
        @modal.enter()
        def start(self):
            pass

    S.__name__ = S.__qualname__ = cls_name
    return app.server(serialized=True, **kwargs)(S)


def test_server_defaults_are_modal_ones():
    app = modal.App("srv")
    server = _server(app)
    assert isinstance(server, modal.Server)
    assert server.get_url() is None  # not running
    web = app._registered["S"].definition.web[0]
    assert web["port"] == 8000 and web["startup_timeout"] == 30.0
    assert web["requires_proxy_auth"] is True  # authenticated unless `unauthenticated=True`
    _server(app, "T", port=9000, unauthenticated=True, name="open")
    web = app._registered["open"].definition.web[0]
    assert web["port"] == 9000 and web["requires_proxy_auth"] is False


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"startup_timeout": 0}, "startup_timeout"),
        ({"exit_grace_period": 4000}, "exit_grace_period"),
        ({"routing_region": ""}, "The `routing_region` argument must be passed."),
        ({"max_concurrency": -1}, "max_concurrency"),
        ({"target_concurrency": 5, "max_concurrency": 2}, "cannot be greater than `max_concurrency`"),
        ({"scaleup_window": 0}, "scaleup_window"),
    ],
)
def test_server_parameters_are_checked(kwargs, message):
    with pytest.raises(InvalidError, match=re.escape(message)):
        _server(modal.App("srv"), **kwargs)


def test_server_class_rules():
    app = modal.App("srv")
    with pytest.raises(InvalidError, match="cannot have an `__init__`"):
        @app.server(serialized=True)
        class WithInit:
            def __init__(self):
                pass

            @modal.enter()
            def start(self):
                pass
    with pytest.raises(InvalidError, match=re.escape("must have an @modal.enter()")):
        @app.server(serialized=True)
        class NoEnter:
            pass
    with pytest.raises(InvalidError, match=re.escape("cannot have `@modal.method")):
        @app.server(serialized=True)
        class WithMethod:
            @modal.enter()
            def start(self):
                pass

            @modal.method()
            def run(self):
                pass
    with pytest.raises(InvalidError, match=re.escape("cannot use modal.parameter")):
        @app.server(serialized=True)
        class WithParam:
            x: str = modal.parameter(default="a")

            @modal.enter()
            def start(self):
                pass
    with pytest.raises(InvalidError, match=re.escape("cannot use `@modal.concurrent`")):
        @app.server(serialized=True)
        @modal.concurrent(max_inputs=4)
        class WithConcurrent:
            @modal.enter()
            def start(self):
                pass


def test_server_concurrency_becomes_the_container_limit():
    app = modal.App("srv")
    _server(app, max_concurrency=8, target_concurrency=2.5)
    config = app._registered["S"].config
    assert config.max_inputs == 8 and config.target_inputs == 3, config


def test_app_image_property():
    image = modal.Image.debian_slim().env({"A": "1"})
    app = modal.App("img", image=image)
    assert app.image is image
    other = modal.Image.debian_slim().env({"A": "2"})
    app.image = other
    assert app.image is other
    with pytest.raises(InvalidError):
        app.image = "python:3.12"


def test_deploy_takes_keywords_only_and_checks_them():
    app = modal.App()
    with pytest.raises(TypeError):
        app.deploy("name")  # type: ignore[misc]
    with pytest.raises(InvalidError, match="supply a deployment name"):
        app.deploy()
    with pytest.raises(InvalidError, match="strategy"):
        modal.App("x").deploy(strategy="sideways")
