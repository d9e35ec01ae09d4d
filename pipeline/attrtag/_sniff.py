"""What a file is, from its first bytes: for errors that say what was passed instead of a model.

Core layer (no torch, no numpy): the checkpoint loader and the model-file sniffer both use it.
"""
from __future__ import annotations

import os

#: PyTorch files are zip archives (``PK\x03\x04``; since torch 1.6) or pickles (``\x80``).
TORCH_MAGIC = (b"PK\x03\x04", b"\x80")

# Magic numbers of files people pass by mistake, to say what the file is.
_KNOWN = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG", "a PNG image"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"PAR1", "a Parquet file"),
)


def head_of(path: str | os.PathLike[str], n: int = 64) -> bytes:
    """The first ``n`` bytes of ``path`` (``b""`` where it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def describe(head: bytes) -> str:
    """``it is a PNG image``, ``it is a text file starting with 'groups:'``, ``the file is empty``..."""
    if not head:
        return "the file is empty"
    for magic, what in _KNOWN:
        if head.startswith(magic):
            return f"it is {what}"
    text = head.decode("utf-8", "replace").rstrip("\ufffd")  # the read may cut a character in two
    if "\ufffd" in text or any(c < " " and c not in "\t\r\n" for c in text):
        return f"it starts with bytes {head[:12]!r}"
    first = text.strip().splitlines()[0][:40] if text.strip() else ""
    return f"it is a text file starting with {first!r}"


def torch_load_failure(path: str | os.PathLike[str], err: BaseException) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in words for the user.

    Not torch's own text where it advises ``weights_only=False``: that would run code from a
    file attrtag did not write, and for a file that is no PyTorch file at all it is beside the point.
    """
    head = head_of(path)
    if not head.startswith(TORCH_MAGIC):
        return f"not a PyTorch file: {describe(head)}"
    said = str(err)
    if "weights_only" in said or "Weights only" in said:
        return "a PyTorch file that holds more than tensors: attrtag reads tensors only, as loading more could run code"
    return f"torch cannot read it: {' '.join(said.split())[:160]}"
