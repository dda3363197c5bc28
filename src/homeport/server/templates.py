"""What a container can be forked from: its template (`backends.TemplateSpec`) and the template's key.

Two kinds (see `homeport.runtime._template`):

- a *runtime template*, with only the runtime imported, shared by every function of an image that sees
  the same file system (its mounts and root file system are part of the key);
- a *snapshot template* (`enable_memory_snapshot=True`), that has run the user's imports and `snap=True`
  hooks, keyed by everything that shapes that state: the code (the module file's bytes; the other
  source files it imported are checked by the backend before each fork), the definition (qualname,
  parameter values ...), the interpreter, the environment (secrets included), the file system view
  and the working directory.

Keys name files and appear in logs. What they cover includes secret values, so a key is an HMAC
under a random key of this control plane: no one can test guesses of a secret against it. Templates
live only as long as their control plane, so nothing needs the key to be stable beyond it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

import msgpack

from .. import _protocol as P
from ..backends import Mount, TemplateSpec

# A container's own variables: never part of what it shares with the other copies of a template.
CONTAINER_VARS = (P.ENV_CONTAINER_ID, P.ENV_CONTAINER_TOKEN, P.ENV_STARTED_AT, "CUDA_VISIBLE_DEVICES",
                  "NVIDIA_VISIBLE_DEVICES")
# A snapshot's `snap=True` hooks run with no GPU visible; a container gets its own after the fork.
NO_GPU_ENV = {"CUDA_VISIBLE_DEVICES": "", "NVIDIA_VISIBLE_DEVICES": "void"}
# Ids that name this run of the app, new each time it runs: a snapshot of the same code, image and
# parameters is the same snapshot in the next run (a class's parameter set is a variant of its function).
RUN_IDS = ("app_id", "function_id", "variant_of")


def container_template(definition: dict[str, Any], argv: tuple[str, ...], env: dict[str, str],
                       base_env: dict[str, str], *, salt: bytes, cwd: str | None = None,
                       mounts: Sequence[Mount] = (), rootfs: str | None = None,
                       gpus: Sequence[int] = ()) -> TemplateSpec:
    """The template a container of this function is forked from (`base_env`: the image's environment,
    before any function's own; `env`: the container's; `gpus`: the device numbers its containers may
    be given, whose nodes the template's view holds while CUDA sees none)."""
    view = {"mounts": [[m.source, m.target, m.read_only] for m in mounts], "rootfs": rootfs,
            **({"gpus": list(gpus)} if gpus else {})}
    if not definition.get("snapshot"):
        key = _keyed(salt, {"argv": list(argv), "env": base_env, **view})
        return TemplateSpec(key=f"rt-{key.hexdigest()}", argv=argv, env=base_env, mounts=tuple(mounts), rootfs=rootfs)
    template_env = {k: v for k, v in env.items() if k not in CONTAINER_VARS}
    if gpus:
        template_env.update(NO_GPU_ENV)
    stable = {k: v for k, v in definition.items() if k not in RUN_IDS}
    h = _keyed(salt, {"argv": list(argv), "env": template_env, "definition": stable, "cwd": cwd, **view})
    path = definition.get("module_file")
    if path and definition.get("module_source") is None:  # else the source is in `stable` already
        try:
            with open(path, "rb") as f:
                h.update(f.read())
        except OSError:
            pass
    return TemplateSpec(key=f"snap-{h.hexdigest()}", argv=argv, env=template_env,
                        definition=msgpack.packb(definition, use_bin_type=True), cwd=cwd, mounts=tuple(mounts),
                        rootfs=rootfs, gpus=tuple(gpus))


def _keyed(salt: bytes, value: dict[str, Any]) -> hmac.HMAC:
    return hmac.new(salt, P.encode(value), hashlib.sha256)
