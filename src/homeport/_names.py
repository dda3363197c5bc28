"""Modal's rule for the names of Apps, Secrets, Volumes, Dicts, Queues and web labels, in one place.

Pure (no I/O, nothing of ours imported), so the SDK checks names early and the control plane checks
them again on every request that names an object: a name is only ever a key in the database, never a
path, but it is still refused when it breaks the rule, whoever sent it.
"""

from __future__ import annotations

import re
from typing import Any

OBJECT_NAME = re.compile(r"^[a-zA-Z0-9\-_.]+$")
MAX_OBJECT_NAME = 64
_APP_ID = re.compile(r"^ap-[a-zA-Z0-9]{22}$")


def object_name_problem(name: Any, object_type: str) -> str | None:
    """Why `name` may not name an object of `object_type` ("App", "Volume", ...), or None if it may."""
    if not isinstance(name, str) or len(name) > MAX_OBJECT_NAME or not OBJECT_NAME.match(name) or _APP_ID.match(name):
        return (
            f"Invalid {object_type} name: '{name}'. Names may contain only alphanumeric characters, dashes, "
            "periods, and underscores, must be shorter than 64 characters, and cannot conflict with App ID "
            "strings."
        )
    return None
