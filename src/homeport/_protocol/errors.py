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
# A sandbox's file system operations (`Sandbox.filesystem`, `Sandbox.open`)
FS = "fs"
FS_NOT_FOUND = "fs_not_found"
FS_IS_A_DIRECTORY = "fs_is_a_directory"
FS_NOT_A_DIRECTORY = "fs_not_a_directory"
FS_PERMISSION = "fs_permission"
FS_DIRECTORY_NOT_EMPTY = "fs_directory_not_empty"
FS_EXISTS = "fs_exists"

# An output row's status for a platform error (no container ran the input): data is {"code", "msg"}.
ERROR = 7
