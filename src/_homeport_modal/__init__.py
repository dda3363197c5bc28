"""Make `import modal` resolve to Homeport in every Python process of an environment Homeport is installed in.

Loaded at interpreter start by `homeport_modal.pth` (installed with the wheel, editable installs too). It
only adds a finder to `sys.meta_path`; nothing is imported until a program says `import modal`. Which
`modal` a program gets is an explicit choice, `HOMEPORT_MODAL`:

- `HOMEPORT_MODAL=1`: always Homeport, even where Modal's own client is installed;
- `HOMEPORT_MODAL=0`: never (Modal's client, or `No module named 'modal'`);
- unset (or `auto`): Homeport only where Modal's own client is not installed, so it is never shadowed.

Standard library only: this runs in every interpreter of the environment.
"""


import os
import sys

ENV = "HOMEPORT_MODAL"


def choice() -> str:
    """"homeport", "modal" or "auto", from HOMEPORT_MODAL."""
    raw = os.environ.get(ENV, "").strip().lower()
    if raw in ("1", "true", "yes", "on", "homeport"):
        return "homeport"
    if raw in ("0", "false", "no", "off", "modal"):
        return "modal"
    if os.environ.get("HOMEPORT_MODAL_ALIAS") == "0":  # a function whose container turned the alias off
        return "modal"
    return "auto"


def modal_client_installed() -> bool:
    """Whether Modal's own client (a `modal` package other than this alias) is importable."""
    from importlib.machinery import PathFinder

    return PathFinder.find_spec("modal") is not None


def active() -> bool:
    """Whether `import modal` should give Homeport in this process."""
    c = choice()
    if c == "auto":
        return not modal_client_installed()
    return c == "homeport"


class ModalAliasFinder:
    """Maps `modal` and `modal.*` to `homeport` and `homeport.*` when `active()` (decided once, lazily)."""

    _decided = None

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "modal" and not fullname.startswith("modal."):
            return None
        if self._decided is None:
            mod = sys.modules.get("modal")
            # A `modal` already imported decides for its submodules.
            if mod is not None:
                self._decided = getattr(mod, "__name__", "") == "homeport"
            else:
                self._decided = active()
        if not self._decided:
            return None
        from homeport import _modal_alias

        return _modal_alias._AliasFinder("modal", "homeport").find_spec(fullname, path, target)


def install() -> None:
    if not any(type(f).__name__ == "ModalAliasFinder" for f in sys.meta_path):
        sys.meta_path.insert(0, ModalAliasFinder())


install()
