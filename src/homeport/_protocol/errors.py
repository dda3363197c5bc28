"""Error codes: what a failed RESULT's `code` says (`homeport.exception.ERROR_TYPES` maps each to its
exception class), and the output status a platform error travels with in an output row."""

from __future__ import annotations

INVALID = "invalid"  # a malformed or impossible request
NOT_FOUND = "not_found"
ALREADY_EXISTS = "already_exists"
AUTH = "auth"  # refused credentials, or what a container's user code may not do
PERMISSION_DENIED = "permission_denied"
RESOURCE_EXHAUSTED = "resource_exhausted"
INTERNAL = "internal"  # a bug of the control plane's
UNIMPLEMENTED = "unimplemented"
VERSION = "version"
EXECUTION = "execution"
TIMEOUT = "timeout"
SERIALIZATION = "serialization"
IMAGE_BUILD = "image_build"
REQUEST_SIZE = "request_size"

# An output row's status for a platform error (no container ran the input): data is {"code", "msg"}.
ERROR = 7
