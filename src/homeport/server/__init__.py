"""The control plane: `python -m homeport.server`. Never imported by the SDK."""
