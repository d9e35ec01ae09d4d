"""What a MODEL file is, from its first bytes: an ONNX export, a PyTorch checkpoint, or neither.

The name alone is not enough: a YAML schema passed where the model goes used to reach
``torch.load`` and come back as PyTorch's ``weights_only`` text. Sniffing the bytes lets the
error say what the file is instead, and lets the model card be read without building a session
(the Ray engine's driver writes the output header without running the model).
"""
from __future__ import annotations

from pathlib import Path

from .._sniff import TORCH_MAGIC, describe
from ..card import ModelCard
from ..errors import CheckpointError

ONNX, CHECKPOINT = "onnx", "checkpoint"

_FIX = "pass the .onnx written by 'attrtag export' or the .pt checkpoint written by 'attrtag train'"


def model_kind(path: str | Path) -> str:
    """``"onnx"`` or ``"checkpoint"``, from the file's first bytes; anything else is an error.

    PyTorch checkpoints are zip archives (``PK\\x03\\x04``; since torch 1.6) or pickles
    (``\\x80``); an ONNX file is a protobuf whose first field is ``ir_version`` (byte ``\\x08``).

    Args:
        path: the MODEL argument.

    Returns:
        :data:`ONNX` or :data:`CHECKPOINT`.

    Raises:
        CheckpointError: missing, unreadable, empty, or not a model; the message says what it is.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "not found"
        raise CheckpointError(f"{path}: model file {what} (expected an exported .onnx or a checkpoint .pt)")
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read the model file ({err.strerror or err})") from None
    if head.startswith(TORCH_MAGIC):
        return CHECKPOINT
    if head.startswith(b"\x08"):
        return ONNX
    raise CheckpointError(f"{path}: not an ONNX model or an attrtag checkpoint: {describe(head)}; {_FIX}")


def read_card(path: str | Path, *, kind: str | None = None) -> ModelCard:
    """The model card of an ONNX file or a checkpoint, without opening an inference session.

    ``kind``: the file's :func:`model_kind` when the caller has read it already.

    Raises:
        CheckpointError: not a model, or not an attrtag one.
    """
    if (kind or model_kind(path)) == ONNX:
        from .onnx_backend import read_onnx_card  # lazy: keeps torch out of the ONNX path

        return read_onnx_card(path)
    from ..model.checkpoint import load_checkpoint

    return load_checkpoint(path)["card"]
