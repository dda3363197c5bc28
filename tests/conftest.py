import os
import sys

import pytest

APPS = os.path.join(os.path.dirname(__file__), "integration", "apps")


@pytest.fixture(scope="session", autouse=True)
def _containers_share_the_test_directory(tmp_path_factory):
    """Containers are isolated from the host (read-only, /tmp their own); the tests' apps leave notes
    for the tests in pytest's temporary directory, which every container may therefore write."""
    os.environ.setdefault("HOMEPORT_CONTAINER_SHARED", str(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="session")
def platform():
    """One private control plane for the integration tests; stopped and checked for leftovers at the end."""
    from homeport.testing import Platform

    with Platform() as p:
        yield p


@pytest.fixture(scope="session")
def apps_path():
    if APPS not in sys.path:
        sys.path.insert(0, APPS)
    return APPS
