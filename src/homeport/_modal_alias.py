"""Make `import modal` (and `import modal.exception`, `from modal.functions import ...`) resolve to Homeport.

Installed by `homeport run|deploy|serve` and in every container, so programs written for Modal run
unchanged. Outside those, `import homeport as modal` does the same without touching the import system.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, real_name: str) -> None:
        self.real_name = real_name

    def create_module(self, spec):
        module = importlib.import_module(self.real_name)
        self._real_spec = module.__spec__
        return module

    def exec_module(self, module) -> None:
        # The import system stamped the alias spec on the real module; give it its own back.
        module.__spec__ = self._real_spec


class _AliasFinder(importlib.abc.MetaPathFinder):
    def __init__(self, alias: str, real: str) -> None:
        self.alias = alias
        self.real = real

    def find_spec(self, fullname, path, target=None):
        if fullname != self.alias and not fullname.startswith(self.alias + "."):
            return None
        real_name = self.real + fullname[len(self.alias) :]
        try:
            if importlib.util.find_spec(real_name) is None:
                return None
        except ModuleNotFoundError:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(real_name))


def install(alias: str = "modal") -> None:
    """Idempotent. Replaces a real `modal` only if it was not imported yet."""
    if any(isinstance(f, _AliasFinder) and f.alias == alias for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _AliasFinder(alias, "homeport"))
