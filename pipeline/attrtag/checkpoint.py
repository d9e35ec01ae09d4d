"""Checkpoints: weights plus everything needed to use them (schema, preprocessing, backbone).

Files are written atomically (temporary file in the same folder + ``os.replace``) so a kill
mid-write never leaves a truncated ``last.pt``, and are read with ``torch.load(weights_only=True)``:
the contents are only tensors, numbers, strings, lists and dicts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from .atomicfile import atomic_path
from .errors import CheckpointError

FORMAT = "attrtag-checkpoint"
VERSION = 1
REQUIRED = ("model", "schema", "preprocessing", "backbone")


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` (with format tags added) to ``path`` atomically; returns the path."""
    path = Path(path)
    payload = {"format": FORMAT, "version": VERSION, **state}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read an attrtag checkpoint safely (``weights_only=True``) and check its format.

    Raises:
        CheckpointError: missing file, not a torch file, not an attrtag checkpoint, or a newer
            format version; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for foreign or corrupt files
        first = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise CheckpointError(f"{path}: cannot read checkpoint ({first})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an attrtag checkpoint (expected format '{FORMAT}')")
    if int(ckpt.get("version", 0)) > VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {ckpt['version']} is newer than this attrtag understands ({VERSION}); upgrade attrtag"
        )
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return ckpt
