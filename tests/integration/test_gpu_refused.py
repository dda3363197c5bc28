"""`gpu=` on a backend that cannot place GPUs (the local one, today) is refused when the app starts, saying
so: never silently run on the CPU. (On Ray, Ray places it: tests/cluster.)"""

import pytest

from homeport.exception import UnimplementedError

pytestmark = pytest.mark.integration


def test_a_gpu_request_on_the_local_backend_is_refused_when_the_app_starts(platform, apps_path):
    from homeport import _modal_alias

    _modal_alias.install()  # the app says `import modal`, as a user's does
    import gpu_local

    with pytest.raises(UnimplementedError, match=r"`gpu=\.\.\.` of on_gpu is not supported by Homeport yet on the local backend"):
        with gpu_local.app.run(show_logs=False):
            gpu_local.on_gpu.remote()
