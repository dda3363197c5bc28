"""Definition-time checks of `@app.cls`, `@modal.method/enter/exit`, parameters and `Cls`: no server."""

from __future__ import annotations

import importlib
import re
import sys
import textwrap
import warnings

import modal
import pytest

from homeport._cls import ordered_hooks
from homeport.exception import DeprecationError, InvalidError, UnimplementedError


@pytest.fixture
def app():
    return modal.App("defs")


def _raises(exc, message):
    return pytest.raises(exc, match=re.escape(message))


# --- lifecycle hooks ------------------------------------------------------------------------------


def test_enter_hook_with_parameters_is_rejected():
    with _raises(InvalidError, "hook `C.setup` must take no parameters other than `self`; got (self, config)"):
        class C:
            @modal.enter()
            def setup(self, config):
                pass


@pytest.mark.parametrize("signature", ["self, a=1", "self, *args", "*args", "", "self, *, k"])
def test_exit_hook_with_parameters_is_rejected(signature):
    ns: dict = {"modal": modal}
    src = f"class C:\n    @modal.exit()\n    def close({signature}):\n        pass\n"
    with _raises(InvalidError, "must take no parameters other than `self`"):
        exec(src, ns)


def test_legacy_three_argument_exit_is_rejected():
    with _raises(InvalidError, "`@modal.exit()` hook `C.close` must take no parameters other than `self`"):
        class C:
            @modal.exit()
            def close(self, exc_type, exc, tb):
                pass


def test_async_enter_hook_is_rejected():
    with _raises(InvalidError, "`@modal.enter()` hook `C.setup` is `async def`; lifecycle hooks must be plain"):
        class C:
            @modal.enter()
            async def setup(self):
                pass


def test_async_exit_hook_is_rejected():
    with _raises(InvalidError, "`@modal.exit()` hook `C.close` is `async def`"):
        class C:
            @modal.exit()
            async def close(self):
                pass


@pytest.mark.parametrize("decorator", ["enter", "exit", "method"])
def test_decorator_on_a_class_is_rejected(decorator):
    with _raises(InvalidError, f"Cannot apply `@modal.{decorator}` to a class. Hint: consider applying to a method"):
        @getattr(modal, decorator)()
        class C:
            pass


@pytest.mark.parametrize("decorator", ["enter", "exit", "method"])
def test_decorator_stacked_on_app_cls_is_rejected(app, decorator):
    with _raises(InvalidError, f"Cannot stack `@modal.{decorator}` on top of `@app.cls()`"):
        @getattr(modal, decorator)()
        @app.cls(serialized=True)
        class C:
            @modal.method()
            def f(self):
                pass


def test_decorator_stacked_on_app_function_is_rejected(app):
    with _raises(InvalidError, "Cannot stack `@modal.enter` on top of `@app.function`. Hint: swap the order"):
        @modal.enter()
        @app.function(serialized=True)
        def f():
            pass


@pytest.mark.parametrize("decorator", ["enter", "exit", "method"])
def test_missing_parentheses(decorator):
    with _raises(InvalidError, f"Did you forget parentheses? Suggestion: `@modal.{decorator}()`."):
        class C:
            @getattr(modal, decorator)
            def f(self):
                pass


def test_class_in_a_function_needs_serialized(app):
    with _raises(InvalidError, "The `@app.cls` decorator must apply to classes in global scope, unless "
                               "`serialized=True` is set"):
        @app.cls()
        class C:
            @modal.method()
            def f(self):
                pass

    with _raises(InvalidError, "The `@app.function` decorator must apply to classes in global scope"):
        @app.function()
        class D:
            def __call__(self):
                pass


def test_app_cls_without_parentheses(app):
    with _raises(InvalidError, "Did you forget parentheses? Suggestion: `@app.cls()`."):
        @app.cls
        class C:
            pass


@pytest.mark.parametrize("lifecycle", ["enter", "exit"])
@pytest.mark.parametrize("web", ["fastapi_endpoint", "asgi_app", "wsgi_app"])
@pytest.mark.parametrize("lifecycle_on_top", [True, False])
def test_lifecycle_and_web_decorators_on_one_method(lifecycle, web, lifecycle_on_top):
    outer, inner = (lifecycle, web) if lifecycle_on_top else (web, lifecycle)
    with _raises(InvalidError, "Interface decorators cannot be combined with lifecycle decorators."):
        class C:
            @getattr(modal, outer)()
            @getattr(modal, inner)()
            def f(self):
                pass


def test_lifecycle_and_web_server_on_one_method():
    with _raises(InvalidError, "Interface decorators cannot be combined with lifecycle decorators."):
        class C:
            @modal.enter()
            @modal.web_server(8000)
            def serve(self):
                pass


@pytest.mark.parametrize("method_on_top", [True, False])
def test_lifecycle_and_method_on_one_method(method_on_top):
    outer, inner = ("method", "enter") if method_on_top else ("enter", "method")
    with _raises(InvalidError, "Interface decorators cannot be combined with lifecycle decorators."):
        class C:
            @getattr(modal, outer)()
            @getattr(modal, inner)()
            def f(self):
                pass


@pytest.mark.parametrize(
    ("outer", "inner", "hook", "other"),
    [("method", "enter", "enter", "method"), ("enter", "method", "enter", "method"),
     ("exit", "fastapi_endpoint", "exit", "fastapi_endpoint"), ("asgi_app", "enter", "enter", "asgi_app")],
)
def test_lifecycle_combination_errors_name_the_method_and_the_fix(outer, inner, hook, other):
    with _raises(InvalidError, f"`C.load` has both `@modal.{hook}()` and `@modal.{other}()`"):
        class C:
            @getattr(modal, outer)()
            @getattr(modal, inner)()
            def load(self):
                pass
    with _raises(InvalidError, f"Use two methods: keep `@modal.{hook}()` on `load` and put `@modal.{other}()` "
                               "on another method"):
        class D:
            @getattr(modal, outer)()
            @getattr(modal, inner)()
            def load(self):
                pass


def test_method_and_web_on_one_method():
    with _raises(InvalidError, "Callable decorators cannot be combined with web interface decorators."):
        class C:
            @modal.method()
            @modal.fastapi_endpoint()
            def f(self):
                pass


def test_enter_and_exit_on_one_method():
    with _raises(InvalidError, "`@modal.exit()` cannot be combined with `@modal.enter()` on the same method"):
        class C:
            @modal.exit()
            @modal.enter()
            def f(self):
                pass


def test_method_twice():
    with _raises(InvalidError, "Cannot apply `@modal.method` twice."):
        class C:
            @modal.method()
            @modal.method()
            def f(self):
                pass


def test_a_deployed_classes_web_methods_have_their_urls_and_are_not_called_with_remote(app):
    from homeport._app_publish import lookup_info as _lookup_info
    from homeport._function import Function

    @app.cls(serialized=True)
    class C:
        @modal.fastapi_endpoint()
        def web(self):
            return "hi"

        @modal.method()
        def plain(self):
            return 1

    info = _lookup_info(C)
    assert info["web_methods"] == ["web"] and set(info["methods"]) == {"plain"}
    url = "http://127.0.0.1:20001"
    deployed = modal.Cls.from_name("defs", "C")
    # The control plane's FUNCTION_LOOKUP reply, as `Cls.from_name` caches it: the deployment's info and
    # the URL of each of the class's endpoints, by `Class.method`.
    deployed._found = {"fid": "fu-1", "tag": "C", "is_generator": False, "info": info, "web": True,
                       "web_url": None, "web_urls": {"C.web": url}}
    obj = deployed()
    assert obj.web.get_web_url() == obj.web.web_url == url
    for how in ("remote", "spawn", "map", "remote_gen"):
        with _raises(InvalidError, f"cannot be invoked for remote execution with `.{how}`. Invoke this function "
                                   f"via its web url '{url}'"):
            getattr(obj.web, how)()
    with _raises(modal.exception.ExecutionError, "C.web belongs to a deployed class"):
        obj.web.local()
    assert isinstance(obj.plain, Function) and obj.plain is obj.plain
    assert repr(obj.web) == "WebMethod(C.web)"


def test_web_endpoints_on_classes_and_functions_are_defined(app):
    @app.cls(serialized=True)
    class C:
        @modal.enter()
        def setup(self):
            pass

        @modal.fastapi_endpoint(method="post", docs=True)
        def web(self, x: int):
            return {"x": x}

        @modal.method()
        def plain(self):
            return 1

    web = app._registered["C"].definition.web
    assert web == [{"name": "web", "type": "fastapi_endpoint", "method": "POST", "label": None, "docs": True,
                    "requires_proxy_auth": False}]
    assert C().web.local(3) == {"x": 3}
    with _raises(InvalidError, "A webhook function cannot be invoked for remote execution with `.remote`"):
        C().web.remote(3)

    @app.function(serialized=True)
    @modal.asgi_app(label="my-api")
    def asgi():
        return "the app"

    assert app._registered[asgi.tag].definition.web == [
        {"name": None, "type": "asgi_app", "label": "my-api", "requires_proxy_auth": False}]
    assert asgi.local() == "the app"
    with _raises(InvalidError, "A webhook function cannot be invoked for remote execution with `.spawn`"):
        asgi.spawn()

    with pytest.warns(DeprecationError, match="renamed to `@modal.fastapi_endpoint`"):
        modal.web_endpoint()


def test_web_decorator_shapes_are_checked(app):
    with _raises(InvalidError, "The `@modal.asgi_app` decorator can't be applied to an async function."):
        @modal.asgi_app()
        async def a():
            pass
    with _raises(InvalidError, "Functions decorated by `@modal.wsgi_app` can't have parameters."):
        @modal.wsgi_app()
        def w(x):
            pass
    with _raises(InvalidError, "Functions decorated by `@modal.web_server` can't have parameters."):
        @modal.web_server(8000)
        def s(port):
            pass
    with _raises(InvalidError, "The `startup_timeout` argument of `@web_server` must be positive."):
        modal.web_server(8000, startup_timeout=0)
    with _raises(InvalidError, "Webhooks cannot be generators"):
        @modal.fastapi_endpoint()
        def g():
            yield 1
    for bad in ("no spaces", "-dash-first", "x" * 64, ""):
        with _raises(InvalidError, "`label` must be 1 to 63 letters, digits and dashes"):
            modal.fastapi_endpoint(label=bad)
    assert modal.fastapi_endpoint(label="My-API-2")  # upper case is lowered
    with _raises(UnimplementedError, "`@modal.asgi_app(custom_domains=...)` is not supported by Homeport yet"):
        modal.asgi_app(custom_domains=["example.com"])
    with _raises(InvalidError, "Web Functions do not support retries."):
        @app.function(retries=2, serialized=True)
        @modal.fastapi_endpoint()
        def r():
            pass


def test_web_endpoints_and_parameters_do_not_mix(app):
    with _raises(InvalidError, "has web endpoints (web) and `modal.parameter()`s"):
        @app.cls(serialized=True)
        class P:
            tag: str = modal.parameter(default="a")

            @modal.fastapi_endpoint()
            def web(self):
                pass


def test_a_web_server_method_serves_alone(app):
    with _raises(InvalidError, "cannot serve other web endpoints too"):
        @app.cls(serialized=True)
        class Two:
            @modal.web_server(8000)
            def server(self):
                pass

            @modal.fastapi_endpoint()
            def api(self):
                pass


def test_experimental_server_class(app):
    @app._experimental_server(port=8000, proxy_regions=["us-east"], serialized=True)
    class Files:
        @modal.enter()
        def start(self):
            pass

        @modal.exit()
        def stop(self):
            pass

    assert app._registered["Files"].definition.web == [
        {"name": None, "type": "server", "port": 8000, "startup_timeout": 30.0, "label": None,
         "requires_proxy_auth": False}]
    assert Files.get_url() is None  # not running
    with _raises(InvalidError, "Server class NoEnter must have an @modal.enter() to setup the server"):
        @app._experimental_server(port=8000, serialized=True)
        class NoEnter:
            @modal.exit()
            def stop(self):
                pass
    with _raises(InvalidError, "Server class WithMethod cannot have `@modal.method()` decorated functions."):
        @app._experimental_server(port=8000, serialized=True)
        class WithMethod:
            @modal.enter()
            def start(self):
                pass

            @modal.method()
            def f(self):
                pass
    with _raises(InvalidError, "`port` must be a local port between 1 and 65535"):
        app._experimental_server(port=0)


# --- the class itself -----------------------------------------------------------------------------


def test_class_without_method_web_endpoint_or_call(app):
    with _raises(InvalidError, "Class Empty has no `@modal.method()`, web endpoint or `__call__`, so it has nothing"):
        @app.cls(serialized=True)
        class Empty:
            @modal.enter()
            def setup(self):
                pass

            def helper(self):
                pass


def test_class_with_only_call_is_accepted(app):
    @app.cls(serialized=True)
    class Callable:
        def __call__(self, x):
            return x

    assert isinstance(Callable, modal.Cls)


@pytest.mark.parametrize("decorator", ["method", "enter", "exit"])
def test_method_decorators_on_a_plain_function(decorator):
    with _raises(InvalidError, f"`@modal.{decorator}()` can only be used on methods of a class registered with "
                               "`@app.cls()`, but `plain` is a plain function."):
        @getattr(modal, decorator)()
        def plain(self=None):
            pass


def test_method_decorator_on_a_nested_plain_function():
    def outer():
        @modal.method()
        def inner(x):
            return x

    with _raises(InvalidError, "`inner` is a plain function"):
        outer()


def test_class_with_methods_but_no_app_cls_fails_when_the_app_runs(tmp_path, monkeypatch):
    (tmp_path / "forgot_cls.py").write_text(textwrap.dedent("""
        import modal

        app = modal.App("forgot")

        class Model:  # @app.cls(serialized=True) forgotten
            @modal.method()
            def predict(self, x):
                return x

        @app.function()
        def f():
            return 1
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("forgot_cls")
    try:
        with _raises(InvalidError, "Class Model has `@modal.method`/`@modal.enter`/`@modal.exit` method `predict` "
                                   "but is not registered with `@app.cls()`"):
            with module.app.run():
                pass
    finally:
        sys.modules.pop("forgot_cls", None)


def test_snap_needs_enable_memory_snapshot(app):
    with _raises(InvalidError, "A class must have `enable_memory_snapshot=True` to use `snap=True` on its methods"):
        @app.cls(serialized=True)
        class C:
            @modal.enter(snap=True)
            def load(self):
                pass

            @modal.method()
            def f(self):
                pass

    @app.cls(enable_memory_snapshot=True, serialized=True)
    class D:
        @modal.enter(snap=True)
        def load(self):
            pass

        @modal.method()
        def f(self):
            pass


def test_init_with_required_arguments_is_rejected(app):
    with _raises(InvalidError, "Class C has an `__init__` that requires arguments (size), but containers create"):
        @app.cls(serialized=True)
        class C:
            def __init__(self, size):
                self.size = size

            @modal.method()
            def f(self):
                pass


def test_init_without_arguments_is_accepted(app):
    @app.cls(serialized=True)
    class C:
        def __init__(self):
            self.ready = True

        @modal.method()
        def f(self):
            return self.ready

    assert C().f.local() is True


def test_schedule_and_is_generator_are_not_class_options(app):
    with _raises(InvalidError, "`schedule=` cannot be used with `@app.cls`"):
        @app.cls(schedule=modal.Period(days=1), serialized=True)
        class C:
            @modal.method()
            def f(self):
                pass

    with _raises(InvalidError, "`is_generator=` cannot be used with `@app.cls`"):
        @app.cls(is_generator=True, serialized=True)
        class D:
            @modal.method()
            def f(self):
                pass


# --- options: @app.cls takes what @app.function takes ---------------------------------------------

_BUILT = {
    "image": modal.Image.debian_slim(),
    "secrets": [modal.Secret.from_dict({"K": "v"})],
    "env": {"A": "1"},
    "timeout": 60,
    "startup_timeout": 30,
    "retries": 2,
    "min_containers": 0,
    "max_containers": 3,
    "buffer_containers": 1,
    "scaledown_window": 10,
    "enable_memory_snapshot": True,
    "serialized": True,
    "include_source": True,
    "name": "Renamed",
    "cpu": 2.0,
    "memory": 1024,
    "gpu": "A100",
}
_NOT_BUILT = {
    "ephemeral_disk": 1024,
    "cloud": "aws",
    "block_network": True,
    "nonpreemptible": True,
    "single_use_containers": True,
}


def _svc(app, **kwargs):
    @app.cls(**{"serialized": True, **kwargs})
    class Svc:
        @modal.method()
        def f(self):
            return 1

    return Svc


@pytest.mark.parametrize("key", sorted(_BUILT))
def test_cls_accepts_function_options(app, key):
    cls = _svc(app, **{key: _BUILT[key]})
    assert isinstance(cls, modal.Cls)
    app._check_supported()  # nothing to complain about


@pytest.mark.parametrize("key", sorted(set(_NOT_BUILT) - {"gpu"}))
def test_cls_options_not_built_fail_when_the_app_runs(app, key):
    _svc(app, **{key: _NOT_BUILT[key]})  # accepted at definition ...
    with pytest.raises(UnimplementedError, match="not supported by Homeport yet"):
        with app.run():  # ... and refused, saying why, before anything starts
            pass


@pytest.mark.parametrize(("old", "value"), [("keep_warm", 1), ("concurrency_limit", 2), ("container_idle_timeout", 5)])
def test_cls_legacy_options_warn(app, old, value):
    with pytest.warns(DeprecationError, match=f"`{old}` is deprecated"):
        _svc(app, **{old: value})


def test_cls_option_validation_matches_function(app):
    with _raises(InvalidError, "`scaledown_window` must be between 2 and 3600 (inclusive)"):
        _svc(app, scaledown_window=1)
    with _raises(InvalidError, "`min_containers` (5) cannot be greater than `max_containers` (2)"):
        _svc(app, min_containers=5, max_containers=2)
    _svc(app, proxy=object())  # accepted when decorating; refused when the app runs:
    with _raises(UnimplementedError, "`proxy=` is not supported by Homeport yet"):
        app._check_supported()
    with pytest.raises(TypeError, match="unexpected keyword argument 'mounts'"):
        _svc(app, mounts=[])


# --- parameters -----------------------------------------------------------------------------------


def test_parameter_types_and_defaults(app):
    @app.cls(serialized=True)
    class P:
        s: str = modal.parameter()
        i: int = modal.parameter(default=1)
        b: bool = modal.parameter(default=False)
        raw: bytes = modal.parameter(default=b"")

        @modal.method()
        def f(self):
            return self.s, self.i, self.b, self.raw

    assert P(s="x").f.local() == ("x", 1, False, b"")
    assert P(raw=b"r", b=True, i=2, s="y").f.local() == ("y", 2, True, b"r")
    assert P(s="x")._params == P(i=1, s="x")._params


@pytest.mark.parametrize(
    ("annotation", "default", "shown", "wanted"),
    [("int", '"s"', "'s' is a str", "an int"), ("int", "True", "True is a bool", "an int"),
     ("str", "1", "1 is an int", "a str"), ("bool", "0", "0 is an int", "a bool"), ("bytes", '"b"', "'b' is a str", "a bytes")],
)
def test_parameter_default_of_the_wrong_type_is_rejected(app, annotation, default, shown, wanted):
    ns: dict = {"modal": modal, "app": app}
    with _raises(InvalidError, f"Class C parameter `x` is annotated `{annotation}`, but its default {shown}. "
                               f"Give it {wanted} default"):
        exec(textwrap.dedent(f"""
            @app.cls(serialized=True)
            class C:
                x: {annotation} = modal.parameter(default={default})

                @modal.method()
                def f(self):
                    pass
        """), ns)


def test_a_class_whose_parameters_all_have_defaults_runs_its_base_pool_with_them(app):
    """`Cls()` is the default instance: the base pool has its values (and keeps min_containers warm);
    a class with a required parameter has no base instance, so its base pool never starts containers."""

    @app.cls(serialized=True, min_containers=1)
    class Defaults:
        size: int = modal.parameter(default=3)
        name: str = modal.parameter(default="a")

        @modal.method()
        def f(self):
            pass

    @app.cls(serialized=True, min_containers=1)
    class Required:
        name: str = modal.parameter()
        size: int = modal.parameter(default=3)

        @modal.method()
        def f(self):
            pass

    defaults, required = app._registered["Defaults"], app._registered["Required"]
    assert defaults.definition.params == {"size": 3, "name": "a"} == Defaults()._params == Defaults(size=3)._params
    assert not defaults.config.unbound and defaults.config.min_containers == 1
    assert required.definition.params == {}
    assert required.config.unbound is True
    assert required.config.min_containers == 1  # kept for the variants bound with values


def test_parameter_annotations_are_checked(app):
    with _raises(InvalidError, "Class C parameter `x`: float is not a supported modal.parameter() type. Use one of: str, int, bool, bytes."):
        @app.cls(serialized=True)
        class C:
            x: float = modal.parameter()

            @modal.method()
            def f(self):
                pass

    with _raises(InvalidError, "All modal.parameter() specifications need to be type-annotated: give Class D parameter `y` a type"):
        @app.cls(serialized=True)
        class D:
            y = modal.parameter()

            @modal.method()
            def f(self):
                pass

    with _raises(InvalidError, "`modal.parameter` default must be a str, int, bool or bytes, got list"):
        modal.parameter(default=[])


def test_parameter_values_are_checked(app):
    P = _params_cls(app)
    with _raises(InvalidError, "Missing required parameter `name` for P."):
        P()
    with _raises(TypeError, "Parameter `n` of P must be int, got str"):
        P(name="a", n="1")
    with _raises(InvalidError, "Can't use positional arguments"):
        P("a")
    with _raises(InvalidError, "P has no parameter `other`"):
        P(name="a", other=1)


def _params_cls(app):
    @app.cls(serialized=True)
    class P:
        name: str = modal.parameter()
        n: int = modal.parameter(default=0)

        @modal.method()
        def f(self):
            return self.name

    return P


# --- Cls ------------------------------------------------------------------------------------------


def test_cls_surface(app):
    P = _params_cls(app)
    with _raises(AttributeError, "You can't access methods on a Cls directly - Did you forget to instantiate"):
        P.f  # noqa: B018
    assert P.with_concurrency(max_inputs=10)._input_overrides["max_inputs"] == 10
    with _raises(InvalidError, "`with_batching` needs a `@modal.batched` method"):
        P.with_batching(max_batch_size=4, wait_ms=100)
    assert repr(modal.Cls.from_name("defs", "P")) == "Cls.from_name('defs', 'P')"  # looked up on first use
    with _raises(modal.exception.ExecutionError, "Class 'P' has not been hydrated"):
        P(name="a").f.remote()


def test_with_options_validates_and_chains(app):
    P = _params_cls(app)
    with pytest.raises(TypeError, match="unexpected keyword arguments: schedule"):
        P.with_options(schedule=modal.Period(days=1))
    with _raises(InvalidError, "`timeout` must be between 1 and 86400 seconds, got 0"):
        P.with_options(timeout=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        variant = P.with_options(container_idle_timeout=5)
    assert any(issubclass(w.category, DeprecationError) for w in caught)
    chained = variant.with_options(timeout=10, secrets=[modal.Secret.from_dict({"K": "v"})])
    config, definition = chained._variant_payload()
    assert config == {"scaledown_window": 5, "env": {"K": "v"}}
    assert definition == {"timeout": 10, "startup_timeout": 10}
    assert P._variant_payload() == ({}, {})
    with _raises(UnimplementedError, "with_options(...) uses parameters Homeport does not build yet"):
        P.with_options(cloud="aws")._variant_payload()
    assert P.with_options(region="us-east")._variant_payload()[1] == {"region": ["us-east"]}
    assert P.with_options(gpu="a100:2")._variant_payload()[0] == {"gpu": ["A100:2"]}
    with _raises(InvalidError, "`with_options(gpu=...)` takes one GPU type string"):
        P.with_options(gpu=["H100", "A100"])


# --- order of hooks and inheritance ---------------------------------------------------------------


def test_hook_order_definition_order_snap_first_bases_first(app):
    class Base:
        @modal.enter()
        def base_post(self):
            pass

        @modal.exit()
        def base_exit(self):
            pass

        @modal.method()
        def inherited(self):
            pass

    @app.cls(enable_memory_snapshot=True, serialized=True)
    class Child(Base):
        @modal.enter()
        def z_post(self):
            pass

        @modal.enter(snap=True)
        def snap(self):
            pass

        @modal.enter()
        def a_post(self):
            pass

        @modal.exit()
        def child_exit(self):
            pass

        @modal.method()
        def own(self):
            pass

    assert ordered_hooks(Child._user_cls) == (["snap", "base_post", "z_post", "a_post"], ["base_exit", "child_exit"])
    assert set(Child._methods) == {"inherited", "own"}


def test_function_level_class(app):
    @app.function(serialized=True)
    class Worker:
        @modal.enter()
        def setup(self):
            self.n = 0

        def __call__(self, x):
            self.n += 1
            return x, self.n

    assert Worker.local(1) == (1, 1)
    assert Worker.local(2) == (2, 2)  # one local instance; enter ran once

    with _raises(InvalidError, "The `@app.function` decorator cannot be used on a class without `__call__`"):
        @app.function(serialized=True)
        class NoCall:
            @modal.method()
            def f(self):
                pass

    with _raises(InvalidError, "declares `modal.parameter()`s, which need `@app.cls()`"):
        @app.function(serialized=True)
        class WithParams:
            x: int = modal.parameter(default=1)

            def __call__(self):
                pass
