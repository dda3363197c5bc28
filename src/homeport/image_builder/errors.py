"""What a build fails with: each error carries the code the client turns into its own exception."""

from __future__ import annotations


class ImageBuildFailed(Exception):
    """A step failed; the message names it and shows the tail of its output (ImageBuildError)."""

    code = "image_build"


class ImageUnsupported(Exception):
    """A step this machine cannot build; the message says what is missing (UnimplementedError)."""

    code = "unimplemented"


class ImageNotFound(LookupError):
    pass
