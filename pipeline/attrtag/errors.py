"""The one exception type the CLI turns into a single line and a non-zero exit."""
from __future__ import annotations


class AttrtagError(Exception):
    """A user-facing error: the message names the bad value, where it came from and the fix.

    Library code raises subclasses of this for bad input; the CLI prints ``str(err)`` on one
    line and exits with status 2. Programming errors stay ordinary exceptions (tracebacks).
    """


class SchemaError(AttrtagError, ValueError):
    """A schema or rules file is malformed."""


class ManifestError(AttrtagError, ValueError):
    """A manifest row is malformed, names an unknown label or a missing file."""


class CheckpointError(AttrtagError, ValueError):
    """A checkpoint or exported model does not match what the caller expects."""


class ImageDecodeError(AttrtagError):
    """An image file cannot be decoded; the message says why, ``reason`` is a short code.

    Codes are listed in ``attrtag.images.REASONS`` (e.g. ``empty``, ``truncated``, ``bomb``);
    tagging writes them into the error records of files it could not tag.
    """

    def __init__(self, message: str, *, reason: str = "decode") -> None:
        super().__init__(message)
        self.reason = reason
