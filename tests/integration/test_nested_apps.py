"""A container imports its app's module without building what the client publishes; its code still sees
every app of the module as the client does, and running one of them from there is refused as before."""

import pytest

from homeport.testing import app_fixture

pytestmark = pytest.mark.integration


nested = app_fixture("nested")


def test_a_container_sees_every_app_of_its_module(nested):
    assert nested.inner_app_here.remote(3) == [["InnerCounter", "inner_square"], "nested-inner", 1009, 10, False]


def test_running_an_app_from_a_container_is_refused(nested):
    out = nested.run_inner.remote(3)
    assert out.startswith("refused: ") and "not allowed from code running inside a container" in out
