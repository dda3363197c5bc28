"""Homeport's version (also `homeport.__version__`), in a module of its own so that any module may read it."""

__version__ = "0.1.0"
