"""Masked grouped cross-entropy for partially labelled images.

Targets are ``[B, G]`` integer tensors, one column per group in schema order, with ``-1`` where
an image has no label for that group (nanoGPT's ``ignore_index=-1`` convention).

Each group's term is a sum over the labelled images divided by that group's label count
(:meth:`denominators`). Passing the counts of a larger batch (``forward(..., denominators=d)``)
makes the term this batch's share of that batch's mean: under DistributedDataParallel the
training loop passes the counts summed over processes, so the shares add up to the loss of the
global batch, exactly, however the labels fall across processes.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..schema import Schema

IGNORE = -1


class MaskedGroupedCrossEntropy(nn.Module):
    """Sum over groups of each group's mean cross-entropy over the images labelled for it.

    A group with no labels in the batch contributes exactly ``0`` -- a zero that is still
    connected to that group's logits, so every parameter takes part in the graph and gradients
    are well defined under DistributedDataParallel without ``find_unused_parameters``.

    Args:
        schema: group order and sizes (targets' columns follow it).
        group_weights: optional multiplier per group name (default 1).
        class_weights: optional ``{group: tensor[n_values]}`` per-class weights (see
            :func:`class_weights_from_counts`); the group's mean is then weighted, as in
            ``F.cross_entropy(weight=...)``.
        label_smoothing: as in ``F.cross_entropy``.
    """

    def __init__(
        self,
        schema: Schema,
        *,
        group_weights: Mapping[str, float] | None = None,
        class_weights: Mapping[str, torch.Tensor] | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.names = schema.names
        unknown = set(group_weights or {}) | set(class_weights or {})
        unknown -= set(self.names)
        if unknown:
            raise ValueError(f"loss weights name unknown groups {sorted(unknown)}; groups are {list(self.names)}")
        self.group_weights = {n: float((group_weights or {}).get(n, 1.0)) for n in self.names}
        self.label_smoothing = float(label_smoothing)
        for name, size in zip(self.names, schema.sizes):
            w = (class_weights or {}).get(name)
            if w is not None and tuple(w.shape) != (size,):
                raise ValueError(f"class weights of group '{name}' must have shape ({size},), got {tuple(w.shape)}")
            # Buffers move with .to(device) and are saved with the module.
            self.register_buffer(f"cw_{name}", None if w is None else w.detach().float().clone(), persistent=False)

    def denominators(self, targets: torch.Tensor) -> torch.Tensor:
        """Each group's label count ``(G,)`` float32: labelled images, or their summed class weights."""
        labelled = (targets != IGNORE).float()  # (B, G)
        cols = []
        for j, name in enumerate(self.names):
            cw = getattr(self, f"cw_{name}")
            cols.append(labelled[:, j] if cw is None else cw[targets[:, j].clamp(min=0)] * labelled[:, j])
        return torch.stack(cols, 1).sum(0)  # (G,)

    def forward(
        self, logits: Mapping[str, torch.Tensor], targets: torch.Tensor, denominators: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Returns ``{'loss': total, <group>: term, ...}``; every term is a finite scalar.

        ``denominators`` (``(G,)``, default :meth:`denominators` of ``targets``): the label
        counts to divide by, e.g. those of the global batch under DDP.
        """
        den = self.denominators(targets) if denominators is None else denominators
        total = None
        out: dict[str, torch.Tensor] = {}
        for j, name in enumerate(self.names):
            x = logits[name].float()  # (B, n)
            t = targets[:, j]  # (B,)
            cw = getattr(self, f"cw_{name}")
            # reduction='none' gives w[t] * ce per image and exactly 0 where t == -1; dividing by
            # the summed weights of the labelled images is F.cross_entropy's weighted mean, without
            # boolean indexing (no host sync on CUDA). With no labels the sum is a zero that is still
            # connected to this group's logits, so every parameter takes part in the graph, and a
            # zero count divides by 1, not 0: the term is 0, never NaN.
            per = F.cross_entropy(x, t, weight=cw, ignore_index=IGNORE, reduction="none", label_smoothing=self.label_smoothing)
            term = per.sum() / torch.where(den[j] > 0, den[j], torch.ones_like(den[j]))
            term = term * self.group_weights[name]
            out[name] = term
            total = term if total is None else total + term
        out["loss"] = total  # type: ignore[assignment]
        return out


def class_weights_from_counts(counts: torch.Tensor, *, power: float = 0.5) -> torch.Tensor:
    """Inverse-frequency class weights from the labelled images only, normalised to mean 1.

    ``power=0.5`` (square-root inverse frequency) is the usual compromise: full inverse
    frequency over-weights values seen a handful of times. Unseen values get weight 0 -- they
    cannot occur as targets anyway.
    """
    c = counts.float()
    w = torch.where(c > 0, c.clamp(min=1).pow(-power), torch.zeros_like(c))
    present = w > 0
    return w / w[present].mean() if present.any() else w


class MaskedSigmoidBCE(nn.Module):
    """The common multi-label recipe, kept as a baseline: independent sigmoids + BCE on one-hot targets.

    Each group's target is the one-hot of its value; groups without a label are masked out.
    Terms are the mean BCE over the labelled images' outputs of each group, summed over groups,
    so the returned dict has the same shape as :class:`MaskedGroupedCrossEntropy`'s.
    """

    def __init__(self, schema: Schema) -> None:
        super().__init__()
        self.names = schema.names

    def denominators(self, targets: torch.Tensor) -> torch.Tensor:
        """Each group's number of labelled images ``(G,)`` float32."""
        return (targets != IGNORE).float().sum(0)

    def forward(
        self, logits: Mapping[str, torch.Tensor], targets: torch.Tensor, denominators: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """As :meth:`MaskedGroupedCrossEntropy.forward`."""
        den = self.denominators(targets) if denominators is None else denominators
        total = None
        out: dict[str, torch.Tensor] = {}
        for j, name in enumerate(self.names):
            x = logits[name].float()  # (B, n)
            t = targets[:, j]
            labelled = (t != IGNORE).to(x.dtype)  # (B,)
            onehot = F.one_hot(t.clamp(min=0), x.shape[1]).to(x.dtype)
            per = F.binary_cross_entropy_with_logits(x, onehot, reduction="none").mean(1) * labelled
            term = per.sum() / torch.where(den[j] > 0, den[j], torch.ones_like(den[j]))
            out[name] = term
            total = term if total is None else total + term
        out["loss"] = total  # type: ignore[assignment]
        return out
