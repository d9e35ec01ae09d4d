"""Checkpoints: the model card, the weights, and (for training runs) the state to resume.

Written atomically (:func:`attrtag._files.atomic_path`) so a kill mid-write never leaves a
truncated ``last.pt``, and read with ``torch.load(weights_only=True)``: the contents are only
tensors, numbers, strings, lists and dicts. The card is stored as :meth:`ModelCard.to_dict`
under ``"card"``; checkpoints written before the card existed (schema, preprocessing, backbone
and rules as top-level keys) still load.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from .._files import atomic_path
from .._sniff import torch_load_failure
from ..card import ModelCard
from ..errors import CheckpointError, first_line
from .model import AttributeModel, build_model

FORMAT = "attrtag-checkpoint"
#: 2: the model card under "card" (1: schema/preprocessing/backbone/rules at the top level).
VERSION = 2
_LEGACY_CARD_KEYS = ("schema", "preprocessing", "backbone", "rules")


def save_checkpoint(path: str | Path, model: AttributeModel, **state: Any) -> Path:
    """Write the model's card and weights, plus ``state`` (optimizer, epoch, ...), atomically.

    Args:
        path: the ``.pt`` file.
        model: the model; its ``card`` and ``state_dict()`` are stored.
        state: further JSON-like or tensor entries (``config``, ``optimizer``, ``epoch``, ...).

    Returns:
        The path.
    """
    path = Path(path)
    payload = {"format": FORMAT, "version": VERSION, "card": model.card.to_dict(), "model": model.state_dict(), **state}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read an attrtag checkpoint safely (``weights_only=True``) and check its format.

    The returned dict always has ``"card"`` (a :class:`ModelCard`), old layouts included.

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
        why = torch_load_failure(path, err)
        raise CheckpointError(f"{path}: not an attrtag checkpoint or ONNX model ({why})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an attrtag checkpoint (expected format '{FORMAT}')")
    if int(ckpt.get("version", 0)) > VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {ckpt['version']} is newer than this attrtag understands ({VERSION}); upgrade attrtag"
        )
    if "model" not in ckpt:
        raise CheckpointError(f"{path}: checkpoint lacks model weights")
    raw = ckpt.get("card")
    if raw is None:  # version 1
        raw = {k: ckpt[k] for k in _LEGACY_CARD_KEYS if ckpt.get(k) is not None}
    ckpt["card"] = ModelCard.from_dict(raw, source=str(path))
    return ckpt


def load_if_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """The checkpoint at ``path`` when it is an attrtag checkpoint, else None (a timm weights file, say).

    Peeks with ``mmap=True`` first, so a large foreign file is not read twice into memory.
    """
    try:
        peek = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a torch zip file (safetensors, an old pickle, anything else): not ours
        return None
    if not isinstance(peek, dict) or peek.get("format") != FORMAT:
        return None
    return load_checkpoint(path)


def model_from_checkpoint(ckpt: Mapping[str, Any], *, source: str = "checkpoint") -> AttributeModel:
    """Rebuild the model described by a loaded checkpoint and load its weights (strict)."""
    card: ModelCard = ckpt["card"]
    drop_rate = float((ckpt.get("config") or {}).get("drop_rate", 0.0))
    model = build_model(card.schema, card.backbone, drop_rate=drop_rate, card=card)
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not fit backbone '{card.backbone}' with this schema "
            f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})"
        )
    return model


def load_model(path: str | Path, *, map_location: str | torch.device = "cpu") -> AttributeModel:
    """The model of a checkpoint file, weights loaded, ``model.card`` set, in eval mode."""
    return model_from_checkpoint(load_checkpoint(path, map_location=map_location), source=str(path)).eval()


def replace_card(path: str | Path, card: ModelCard, *, out: str | Path | None = None) -> Path:
    """Store ``card`` in a checkpoint, weights and training state unchanged (``attrtag calibrate``).

    Args:
        path: the checkpoint to read.
        card: the new card; its schema must be the checkpoint's (the weights depend on it).
        out: where to write (default: ``path`` itself, replaced atomically).

    Returns:
        The file written.

    Raises:
        CheckpointError: ``path`` is not an attrtag checkpoint, or the schemas differ.
    """
    ckpt = load_checkpoint(path)
    old: ModelCard = ckpt["card"]
    old.schema.check_same(card.schema, what=f"{path}: the new model card's schema differs from the checkpoint's")
    payload = {k: v for k, v in ckpt.items() if k not in _LEGACY_CARD_KEYS}
    payload.update(version=VERSION, card=card.to_dict())
    target = Path(out) if out is not None else Path(path)
    with atomic_path(target) as tmp:
        torch.save(payload, tmp)
    return target
