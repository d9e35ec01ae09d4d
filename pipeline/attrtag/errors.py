"""Every user-facing error type, in one leaf module that every layer may import.

The CLI turns an :class:`AttrtagError` into one line on stderr and exit status 2; anything else
is a bug and keeps its traceback.
"""
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

    Codes are listed in ``attrtag.data.images.REASONS`` (e.g. ``empty``, ``truncated``,
    ``bomb``); tagging writes them into the error records of files it could not tag.
    """

    def __init__(self, message: str, *, reason: str = "decode") -> None:
        super().__init__(message)
        self.reason = reason


class DeviceUnavailableError(AttrtagError, RuntimeError):
    """An explicitly requested device (``cuda``, ``tensorrt``) cannot be used here."""


class InputError(AttrtagError, ValueError):
    """A tagging INPUT argument is unusable: matches nothing, or is an unreadable list file."""


class OutputError(AttrtagError, ValueError):
    """A tag output file cannot be used: unknown format, unreadable, or not an attrtag output."""


class OutputMismatchError(OutputError):
    """Resuming into an output that a different model, schema or setting produced."""


class ExportError(AttrtagError):
    """The exporter failed, the checker rejected the graph, or ONNX Runtime disagrees with PyTorch."""


def first_line(err: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when empty), for one-line errors.

    Third-party libraries (torch, ONNX Runtime, protobuf) raise multi-line messages; a
    user-facing error quotes only their first line.
    """
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:limit]
