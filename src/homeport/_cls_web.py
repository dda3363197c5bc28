"""A web endpoint method of a class (local or deployed): served over HTTP at its URL, never with `.remote()`."""

from __future__ import annotations

from typing import Any

from ._function import webhook_call_error


class WebMethodBase:
    """What every web endpoint method has; `_qualname`, `web_url` and `local` are each kind's own."""

    _name: str

    @property
    def _qualname(self) -> str:
        raise NotImplementedError

    @property
    def web_url(self) -> str | None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"WebMethod({self._qualname})"

    def get_web_url(self) -> str | None:
        return self.web_url

    def __getattr__(self, how: str) -> Any:
        if how in ("remote", "map", "starmap", "spawn", "remote_gen", "for_each"):
            raise webhook_call_error(how, self._qualname, self.web_url)
        raise AttributeError(how)
