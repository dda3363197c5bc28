"""`modal.sandbox`: the module path of `Sandbox` and its helpers in Modal's client."""

from ._sandbox import Probe, Sandbox, SandboxFilesystem

__all__ = ["Probe", "Sandbox", "SandboxFilesystem"]
