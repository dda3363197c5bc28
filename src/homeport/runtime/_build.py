"""`python -m homeport.runtime._build SPEC`: run an `Image.run_function` step inside the image's environment.

The image builder writes SPEC (msgpack: how to find the function, its pickled arguments) and runs this
with the image's interpreter, so the function sees exactly the packages of the image being built.
"""

from __future__ import annotations

import inspect
import os
import sys

import cloudpickle
import msgpack

from .. import _protocol as P


def main(spec_path: str) -> None:
    with open(spec_path, "rb") as f:
        spec = msgpack.unpackb(f.read(), raw=False)
    if os.environ.get(P.ENV_MODAL_ALIAS, "1") == "1":
        from .. import _modal_alias

        _modal_alias.install()
    from .. import _context

    _context.runtime_process = True  # a build step runs in a container: modal.is_local() is False
    from ._load import _resolve, import_user_module

    if spec.get("serialized") is not None:
        fn = cloudpickle.loads(spec["serialized"])
    else:
        module = import_user_module(spec["module_name"], spec.get("module_file"), spec.get("sys_path") or [])
        fn = _resolve(module, spec["qualname"])
    fn = getattr(fn, P.USER_CALLABLE_ATTR, fn)
    args, kwargs = cloudpickle.loads(spec["args"])
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        import asyncio

        asyncio.run(result)  # type: ignore[arg-type]
    sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1])
