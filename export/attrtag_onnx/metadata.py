"""The model card in an ONNX file: written into ``metadata_props`` here, read by the runtime.

Every entry of :meth:`attrtag.card.ModelCard.to_metadata` is JSON text under an ``attrtag.``
key (``attrtag.schema`` with each group's kind, ``attrtag.preprocessing``, ``attrtag.backbone``,
``attrtag.precision``, and ``attrtag.rules`` / ``attrtag.label_counts`` /
``attrtag.value_thresholds`` / ``attrtag.calibration`` ... when set), so any ONNX tool can show
it and a loader can check it without torch (:func:`attrtag.runtime.onnx_backend.read_onnx_card`).
A model with a multi-label group is written as card format 3, which attrtag versions before them
refuse ("upgrade attrtag") rather than misread.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from attrtag._files import atomic_path
from attrtag.card import FORMAT_VERSION, METADATA_PREFIX, ModelCard
from attrtag.runtime.onnx_backend import INPUT_NAME, check_output_names, read_onnx_card

if TYPE_CHECKING:
    import onnx

__all__ = ["FORMAT_VERSION", "INPUT_NAME", "ModelCard", "read_metadata", "restamp", "write_metadata"]

#: Reading is the runtime's job; this name is kept for code written against attrtag 0.1.
read_metadata = read_onnx_card


def write_metadata(model: "onnx.ModelProto", card: ModelCard) -> None:
    """Set the ``attrtag.*`` entries of ``model.metadata_props`` in place.

    Other entries (e.g. the ones ONNX Runtime's quantizer adds) are kept; old ``attrtag.*``
    entries are replaced, so re-stamping a converted model leaves no stale precision or rules.

    Args:
        model: the ONNX model to stamp.
        card: what to write.
    """
    check_output_names(card.schema, [o.name for o in model.graph.output], source="exported graph")
    keep = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith(METADATA_PREFIX)]
    del model.metadata_props[:]
    for key, value in keep + list(card.to_metadata().items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def restamp(
    path: str | os.PathLike[str], card: ModelCard, *, out: str | os.PathLike[str] | None = None
) -> Path:
    """Write ``card`` into the metadata of an exported model, graph and weights unchanged.

    What ``attrtag calibrate`` does to an ``.onnx`` file. The card's schema must be the file's
    (the graph's outputs are named after it).

    Args:
        path: the ``.onnx`` file to read.
        card: the new card.
        out: where to write (default: ``path`` itself, replaced atomically).

    Returns:
        The file written.

    Raises:
        CheckpointError: not an attrtag model, or a schema that does not fit the graph.
    """
    import onnx

    old = read_onnx_card(path)
    old.schema.check_same(card.schema, what=f"{path}: the new model card's schema differs from the model's")
    model = onnx.load(str(path))
    write_metadata(model, card)
    target = Path(out) if out is not None else Path(path)
    with atomic_path(target) as tmp:
        onnx.save_model(model, str(tmp))
    return target
