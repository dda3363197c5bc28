from ._backend import LocalBackend

__all__ = ["LocalBackend"]
