"""The container runtime: `python -m homeport.runtime`. Imports no SDK internals."""
