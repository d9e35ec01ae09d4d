"""Every user-facing error type, in one leaf module that every layer may import.

The CLI turns an :class:`AttrtagError` into one line on stderr and exit status 2; anything else
is a bug and keeps its traceback.

Parameters, not flags: a library message names what the caller passed in the caller's words,
and a Python caller passed ``top_k``, a shell user ``--top-k``. So library text (errors, and the
warnings and notes it hands to the caller) writes a parameter in single backticks:
```top_k` must be at least 1``, ```priors=False` turns them off``, ```opset=5```. ``str(err)``
(and :func:`spell` without a table) shows the Python words (``top_k must be at least 1``); the
CLI passes its one table of flags (``attrtag.cli.FLAGS``) to :func:`spell` and shows
``--top-k must be at least 1``.
"""
from __future__ import annotations

import re
from typing import Mapping

#: A parameter in library text: ```name``` or ```name=value``` (single backticks, a Python name).
PARAMETER = re.compile(r"(?<!`)`([a-z][a-z0-9_]*)(?:=([^`\s]*))?`(?!`)")


def spell(text: str, flags: Mapping[str, str] | None = None) -> str:
    """Library text in a caller's words: the Python parameters, or with ``flags`` the CLI's.

    Args:
        text: a message with parameters in backticks (see the module docstring).
        flags: parameter -> flag (``{"top_k": "--top-k"}``), and ``name=value`` -> flag for
            switches (``{"priors=False": "--no-priors"}``). None: the Python words.

    Returns:
        ```top_k``` -> ``top_k`` / ``--top-k``; ```opset=5``` -> ``opset=5`` / ``--opset 5``
        (a name the table lacks keeps its Python spelling).
    """
    def one(match: re.Match[str]) -> str:
        name, value = match.group(1), match.group(2)
        whole = name if value is None else f"{name}={value}"
        if flags is None:
            return whole
        if whole in flags:
            return flags[whole]
        if name in flags:
            return flags[name] if value is None else f"{flags[name]} {value}"
        return whole

    return PARAMETER.sub(one, text)


class AttrtagError(Exception):
    """A user-facing error: the message names the bad value, where it came from and the fix.

    Library code raises subclasses of this for bad input; the CLI prints the message on one
    line (:meth:`spelled` with its flags) and exits with status 2. Programming errors stay
    ordinary exceptions (tracebacks). Parameters in the message are marked up as the module
    docstring says; ``str(err)`` shows them as Python names.
    """

    def __str__(self) -> str:
        return spell(super().__str__())

    @property
    def text(self) -> str:
        """The message as raised, parameters still marked up (to re-raise it elsewhere)."""
        return super().__str__()

    def spelled(self, flags: Mapping[str, str]) -> str:
        """The message with parameters spelled as ``flags`` spell them (the CLI's table)."""
        return spell(super().__str__(), flags)


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
