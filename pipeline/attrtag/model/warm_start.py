"""Starting a new run from an attrtag checkpoint (``pretrained=best.pt``): the correct-and-retrain loop.

After correcting labels (or adding a value to the schema) a user retrains from the model they
have, not from ImageNet. The backbone must be the checkpoint's (its tensors are the point); the
grouped head is one linear layer over all groups (:class:`~.head.GroupedHead`), so a changed
schema changes its shape. Rather than dropping the whole head, each output row is matched by
(group, kind, value): every value both schemas share keeps its learnt row, and only new groups
and values start from the fresh initialisation. What was kept is said in one line.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from ..errors import CheckpointError
from ..schema import Schema
from .model import AttributeModel

_HEAD = ("head.fc.weight", "head.fc.bias")


def warm_start(model: AttributeModel, ckpt: Mapping[str, Any], *, source: str) -> str:
    """Load a checkpoint's weights into ``model`` where they fit; returns the line that says what was loaded.

    Args:
        model: a freshly built model (its backbone must be the checkpoint's).
        ckpt: a loaded attrtag checkpoint (:func:`~.checkpoint.load_checkpoint`); its ``model``
            entry holds the weights it is used with (the EMA's, when it kept one).
        source: the file, for messages.

    Raises:
        CheckpointError: another backbone, or no tensor fits.
    """
    card = ckpt["card"]
    if card.backbone != model.backbone_name:
        raise CheckpointError(
            f"`pretrained={source}` is a '{card.backbone}' model, this run's `backbone` is '{model.backbone_name}'; "
            f"pass `backbone={card.backbone}` to start from it"
        )
    saved, own = ckpt["model"], model.state_dict()
    body = {k: v for k, v in saved.items() if k in own and k not in _HEAD and v.shape == own[k].shape}
    rows = _head_rows(card.schema, model.schema)
    kept = [i for i, j in enumerate(rows) if j is not None]
    if not body and not kept:
        raise CheckpointError(f"`pretrained={source}`: none of its tensors fits this model; nothing to start from")
    model.load_state_dict(body, strict=False)
    if kept and all(k in saved and saved[k].shape[1:] == own[k].shape[1:] for k in _HEAD):
        with torch.no_grad():
            src = torch.tensor([rows[i] for i in kept])
            for k in _HEAD:
                own[k][kept] = saved[k][src].to(own[k].dtype)  # state_dict tensors share the parameters' storage
    else:
        kept = []
    n_body = sum(k not in _HEAD for k in own)
    head = _describe_head(model.schema, rows, kept)
    return f"started from {source}: {len(body)} of {n_body} backbone tensors, {head}"


def _head_rows(old: Schema, new: Schema) -> list[int | None]:
    """For each output row of ``new``, the row of ``old`` with the same group, kind and value (or None)."""
    where: dict[tuple[str, str, str], int] = {}
    row = 0
    for g in old:
        for v in g.values:
            where[(g.name, g.kind, v)] = row
            row += 1
    return [where.get((g.name, g.kind, v)) for g in new for v in g.values]


def _describe_head(schema: Schema, rows: list[int | None], kept: list[int]) -> str:
    """``head: all 12 values kept`` or which groups and values start fresh."""
    kept_set, fresh_groups, fresh_values, row = set(kept), [], [], 0
    for g in schema:
        new = [v for i, v in enumerate(g.values) if row + i not in kept_set]
        if len(new) == len(g):
            fresh_groups.append(g.name)
        else:
            fresh_values += [f"{g.name}.{v}" for v in new]
        row += len(g)
    said = f"the head's rows of {len(kept)} of {len(rows)} values"
    if fresh_groups:
        said += f"; heads of groups {', '.join(fresh_groups)} start fresh"
    if fresh_values:
        said += f"; new values {', '.join(fresh_values)} start fresh"
    return said
