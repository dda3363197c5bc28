"""CPU and memory requests (admission) and limits (enforced by the kernel)."""

import os

import pytest

from homeport.backends.local._cgroups import Cgroups, CgroupsUnavailable
from homeport.exception import ExecutionError
from homeport.testing import app_fixture

pytestmark = pytest.mark.integration


def _no_memory_limits() -> str | None:
    """Why this machine cannot enforce a memory limit (None: it can), found by making a cgroup."""
    try:
        Cgroups().create(f"homeport-test-probe-{os.getpid()}", 64, None).remove()
    except CgroupsUnavailable as exc:
        return str(exc)
    return None


res = app_fixture("resources")


def test_memory_limit_kills_with_a_clear_out_of_memory_error(res):
    assert res.hog.remote(16) == 16 << 20  # under the limit: fine
    with pytest.raises(ExecutionError, match=r"out of memory \(memory limit 200 MiB\)") as info:
        res.hog.remote(400)
    # One sentence for what happened, one for what to change.
    assert "ran out of memory (memory limit 200 MiB) and was killed while running this input. " \
           "Raise the limit with `memory=(request, limit)`" in str(info.value)


@pytest.mark.skipif(_no_memory_limits() is not None, reason=f"no memory limits here: {_no_memory_limits()}")
def test_memory_used_while_importing_the_module_counts_against_the_limit(platform, apps_path):
    """The container is in its cgroup before it runs any of the user's code, so an import that
    allocates past the limit is killed for it, and the caller is told so instead of waiting."""
    import resources_import

    with resources_import.app.run(show_logs=False):
        with pytest.raises(ExecutionError, match=r"ran out of memory \(memory limit 200 MiB\) and was killed during "
                                                 r"start-up \(importing the module"):
            resources_import.on_import.remote()


def test_cpu_limit_is_set_in_the_kernel(res):
    quota, period = res.cpu_quota.remote()
    if quota is not None and " " in quota:  # cgroup v2: "max period" or "quota period"
        quota, period = quota.split()
    assert int(quota) / int(period) == pytest.approx(0.5)


def test_requests_admit_only_what_fits_on_the_machine(res):
    # each container requests 60% of the machine's cores, so only one runs at a time
    pids = set(res.big.map([0.2] * 4))
    assert len(pids) == 1


def test_a_request_larger_than_the_machine_fails_clearly(res):
    with pytest.raises(ExecutionError, match=r"No container can start: it requests cpu=.* lower `cpu`"):
        res.impossible.remote()
