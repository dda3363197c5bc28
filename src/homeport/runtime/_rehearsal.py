"""A spare's rehearsal of a container's first import.

A copy forked from a template shares the template's memory copy-on-write: the first write to each of
its pages (a reference count, an allocation, the compiler's and the import system's state) copies it,
at ~10 µs a page on this kind of machine. A container's import of the user's module writes hundreds of
pages that the Homeport SDK's decorators, images, volumes, secrets and classes share with every other
module that uses them (bench_app: ~745 page copies, 6.8 ms, in a fresh fork; 2 ms in the template).

A spare of a template that has loaded no user code (`_spare`) rehearses that import while it waits for
its container, off any container's path: it compiles and runs a small app of its own through the SDK,
as a container does (`_context.runtime_process`), and drops it. Those pages are then its own, and the
user's import copies few (bench_app: ~114 pages, ~3.8 ms). It runs Homeport's code only, none of the
user's, asks nothing of the control plane, and leaves no app behind; whatever goes wrong in it is
ignored (it only saves time).
"""

from __future__ import annotations

import gc
import sys
import types

# `homeport`, not `modal`: the `modal` alias is installed by the runtime only where the container's
# settings ask for it (`ENV_MODAL_ALIAS`), after its container is handed to the spare.
SOURCE = '''
import homeport as modal

app = modal.App("homeport-rehearsal")
image = modal.Image.debian_slim().pip_install("requests").env({"REHEARSAL": "1"})
volume = modal.Volume.from_name("homeport-rehearsal", create_if_missing=True)


@app.function(image=image, volumes={"/data": volume}, timeout=60, retries=2)
def plain(x: int = 0) -> int:
    return x


@app.function(secrets=[modal.Secret.from_dict({"REHEARSAL": "1"})])
@modal.concurrent(max_inputs=10)
async def concurrent(x):
    return x


@app.cls(enable_memory_snapshot=True)
class Model:
    size: int = modal.parameter(default=0)

    @modal.enter(snap=True)
    def load(self):
        self.state = self.size

    @modal.method()
    def predict(self, x):
        return x
'''


def rehearse() -> bool:
    """Run the rehearsal app (see the module docstring): whether it ran through."""
    from .. import _context

    was = _context.runtime_process
    _context.runtime_process = True
    name = "_homeport_rehearsal"
    ran = False
    try:
        module = types.ModuleType(name)
        sys.modules[name] = module
        exec(compile(SOURCE, "<homeport rehearsal>", "exec"), module.__dict__)
        ran = True
    except Exception:
        pass
    finally:
        sys.modules.pop(name, None)
        _context.runtime_process = was
    gc.collect()
    return ran
