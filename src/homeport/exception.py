"""Exceptions raised by Homeport, with the names and types Modal programs catch.

    Error
    ├── InvalidError                      a definition or argument the user must change
    │   ├── ConflictError
    │   └── LocalFunctionError            a function that cannot be imported in a container
    ├── NotFoundError                     an app, function, call, secret or volume that does not exist
    ├── AlreadyExistsError
    ├── AuthError                         the control plane refused the token
    ├── PermissionDeniedError
    ├── ResourceExhaustedError
    ├── InternalError
    ├── ServiceError
    ├── UnimplementedError                a parameter whose effect Homeport does not build yet
    ├── ConnectionError                   the control plane cannot be reached
    ├── VersionError
    ├── RemoteError                       a failure in a container without a Python exception to re-raise
    │   └── ImageBuildError
    ├── ExecutionError                    the platform could not run the input (container died, not hydrated)
    ├── SerializationError                an argument or result cannot be pickled
    ├── DeserializationError
    ├── RequestSizeError
    ├── InternalFailure
    └── TimeoutError
        ├── FunctionTimeoutError          an input ran longer than the function's `timeout`
        ├── OutputExpiredError
        └── SandboxTimeoutError
    InputCancellation (BaseException)     raised inside user code when its input is cancelled
    DeprecationError (UserWarning)        a legacy form that keeps working, with its modern name

`ERROR_TYPES` maps the wire error codes of `homeport._protocol` to these classes.
"""

from __future__ import annotations

from ._protocol import errors as E

__all__ = [
    "AlreadyExistsError",
    "AuthError",
    "ConflictError",
    "ConnectionError",
    "DeprecationError",
    "DeserializationError",
    "Error",
    "ExecTimeoutError",
    "ExecutionError",
    "FunctionTimeoutError",
    "ImageBuildError",
    "InputCancellation",
    "InternalError",
    "InternalFailure",
    "InvalidError",
    "LocalFunctionError",
    "NotFoundError",
    "OutputExpiredError",
    "PermissionDeniedError",
    "RemoteError",
    "RequestSizeError",
    "ResourceExhaustedError",
    "SandboxFilesystemDirectoryNotEmptyError",
    "SandboxFilesystemError",
    "SandboxFilesystemIsADirectoryError",
    "SandboxFilesystemNotADirectoryError",
    "SandboxFilesystemNotFoundError",
    "SandboxFilesystemPermissionError",
    "SandboxTerminatedError",
    "SandboxTimeoutError",
    "SerializationError",
    "ServiceError",
    "TimeoutError",
    "UnimplementedError",
    "VersionError",
]


class Error(Exception):
    """Base class for every Homeport error."""


class InvalidError(Error):
    """A definition, argument or configuration is invalid; the message says what to change."""


class ConflictError(InvalidError):
    pass


class LocalFunctionError(InvalidError):
    pass


class NotFoundError(Error):
    pass


class AlreadyExistsError(Error):
    pass


class AuthError(Error):
    pass


class PermissionDeniedError(Error):
    pass


class ResourceExhaustedError(Error):
    pass


class InternalError(Error):
    pass


class ServiceError(Error):
    pass


class UnimplementedError(Error):
    """A documented parameter whose effect Homeport does not build yet."""


class ConnectionError(Error):
    pass


class VersionError(Error):
    pass


class RemoteError(Error):
    pass


class ImageBuildError(RemoteError):
    pass


class ExecutionError(Error):
    pass


class SerializationError(Error):
    pass


class DeserializationError(Error):
    pass


class RequestSizeError(Error):
    pass


class InternalFailure(Error):
    pass


class TimeoutError(Error):
    pass


class FunctionTimeoutError(TimeoutError):
    pass


class OutputExpiredError(TimeoutError):
    pass


class SandboxTimeoutError(TimeoutError):
    pass


class SandboxTerminatedError(Error):
    """The sandbox was terminated (`Sandbox.wait()` with `raise_on_termination=True`)."""


class ExecTimeoutError(TimeoutError):
    pass


class SandboxFilesystemError(Error):
    """A file operation of `Sandbox.filesystem` failed inside the sandbox."""


class SandboxFilesystemNotFoundError(SandboxFilesystemError):
    pass


class SandboxFilesystemIsADirectoryError(SandboxFilesystemError):
    pass


class SandboxFilesystemNotADirectoryError(SandboxFilesystemError):
    pass


class SandboxFilesystemPermissionError(SandboxFilesystemError):
    pass


class SandboxFilesystemDirectoryNotEmptyError(SandboxFilesystemError):
    pass


class InputCancellation(BaseException):
    """Raised inside user code when the input it is running is cancelled."""


class DeprecationError(UserWarning):
    """Warning category for legacy forms (`Stub`, `keep_warm`, ...) that keep working."""


ERROR_TYPES: dict[str, type[Error]] = {
    E.INVALID: InvalidError,
    E.NOT_FOUND: NotFoundError,
    E.ALREADY_EXISTS: AlreadyExistsError,
    E.AUTH: AuthError,
    E.PERMISSION_DENIED: PermissionDeniedError,
    E.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    E.INTERNAL: InternalError,
    E.UNIMPLEMENTED: UnimplementedError,
    E.VERSION: VersionError,
    E.EXECUTION: ExecutionError,
    E.TIMEOUT: FunctionTimeoutError,
    E.SERIALIZATION: SerializationError,
    E.IMAGE_BUILD: ImageBuildError,
    E.REQUEST_SIZE: RequestSizeError,
    E.FS: SandboxFilesystemError,
    E.FS_NOT_FOUND: SandboxFilesystemNotFoundError,
    E.FS_IS_A_DIRECTORY: SandboxFilesystemIsADirectoryError,
    E.FS_NOT_A_DIRECTORY: SandboxFilesystemNotADirectoryError,
    E.FS_PERMISSION: SandboxFilesystemPermissionError,
    E.FS_DIRECTORY_NOT_EMPTY: SandboxFilesystemDirectoryNotEmptyError,
    E.FS_EXISTS: SandboxFilesystemError,
}


def error_from_code(code: str, message: str) -> Error:
    return ERROR_TYPES.get(code, Error)(message)


def code_of(exc: BaseException) -> str:
    for code, cls in ERROR_TYPES.items():
        if type(exc) is cls:
            return code
    for code, cls in ERROR_TYPES.items():
        if isinstance(exc, cls):
            return code
    return "internal"
