"""Masked grouped losses for partially labelled images.

Targets are ``[B, W]`` integer tensors, the samples' target rows: one column per group in schema
order, with ``-1`` where an image has no label for that group (nanoGPT's ``ignore_index=-1``
convention), then the values of every multi-label group (``1`` present, ``0`` absent, ``-1``
unknown; :attr:`attrtag.schema.Schema.multi_slices`). Labels filled in by a teacher
(:mod:`.completion`) come separately, as ``filled = {group: (probs [B, n], weight [B])}``: a
distribution per image (one-hot for hard labels) and its weight, 0 where nothing was filled (for
a multi-label group, each value's probability and weight ``[B, n]``); they only ever sit where
the given target is ``-1``.

A multi-label group is one sigmoid and binary cross-entropy per value, masked per value: an
unknown value adds nothing to the loss or to its normaliser, the count of known (image, value)
pairs. Its class weights are positive weights (BCE's ``pos_weight``), its logit offsets the
values' prior log-odds (:func:`binary_logit_adjustment`).

Each group's term is a sum over the labelled images (given and filled, weighted) divided by that
group's label count (:meth:`denominators`). Passing the counts of a larger batch
(``forward(..., denominators=d)``) makes the term this batch's share of that batch's mean: under
DistributedDataParallel the training loop passes the counts summed over processes, so the shares
add up to the loss of the global batch, exactly, however the labels fall across processes.

``logit_offsets`` (logit adjustment, Menon et al. 2021, "Long-tail learning via logit
adjustment", eq. 10) are added to the logits inside the loss only: the model learns logits whose
plain softmax is balanced across values, so inference, ONNX export and tagging stay unchanged.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..schema import Schema

IGNORE = -1

#: ``{group: (probs (B, n), weight (B,) or (B, n))}``: teacher-filled labels, weight 0 where none.
Filled = Mapping[str, tuple[torch.Tensor, torch.Tensor]]


class MaskedGroupLoss(nn.Module):
    """Sum over groups of each group's mean loss over the images labelled for it.

    A group with no labels in the batch contributes exactly ``0`` -- a zero that is still
    connected to that group's logits, so every parameter takes part in the graph and gradients
    are well defined under DistributedDataParallel without ``find_unused_parameters``.
    Subclasses give the per-image loss (:meth:`per_image`) and what a teacher's logits mean
    (:meth:`probabilities`).

    Args:
        schema: group order and sizes (targets' columns follow it).
        group_weights: optional multiplier per group name (default 1).
        class_weights: optional ``{group: tensor[n_values]}`` per-class weights (see
            :func:`class_weights_from_counts`); the group's mean is then weighted, as in
            ``F.cross_entropy(weight=...)``. For a multi-label group: positive weights
            (:func:`positive_weights`), as BCE's ``pos_weight``.
        label_smoothing: as in ``F.cross_entropy`` (softmax losses of exclusive groups only).
        logit_offsets: optional ``{group: tensor[n_values]}`` added to the logits in the loss
            (see :func:`logit_adjustment`).
    """

    def __init__(
        self,
        schema: Schema,
        *,
        group_weights: Mapping[str, float] | None = None,
        class_weights: Mapping[str, torch.Tensor] | None = None,
        label_smoothing: float = 0.0,
        logit_offsets: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.names = schema.names
        #: Multi-label groups and where their values sit in a target row.
        self.multi = schema.multi_slices
        unknown = set(group_weights or {}) | set(class_weights or {}) | set(logit_offsets or {})
        unknown -= set(self.names)
        if unknown:
            raise ValueError(f"loss weights name unknown groups {sorted(unknown)}; groups are {list(self.names)}")
        self.group_weights = {n: float((group_weights or {}).get(n, 1.0)) for n in self.names}
        self.label_smoothing = float(label_smoothing)
        for name, size in zip(self.names, schema.sizes):
            for prefix, given in (("cw", class_weights), ("offset", logit_offsets)):
                w = (given or {}).get(name)
                if w is not None and tuple(w.shape) != (size,):
                    raise ValueError(f"{prefix} of group '{name}' must have shape ({size},), got {tuple(w.shape)}")
                # Buffers move with .to(device); not saved: the recipe rebuilds them from the config.
                self.register_buffer(f"{prefix}_{name}", None if w is None else w.detach().float().clone(),
                                     persistent=False)

    def adjusted(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Group ``name``'s logits as the loss sees them (float32, plus the logit offsets)."""
        offset = getattr(self, f"offset_{name}")
        x = x.float()
        return x if offset is None else x + offset

    def probabilities(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """What the loss fits to the labels given group ``name``'s logits: its distribution, or each
        value's probability for a multi-label group."""
        if name in self.multi:
            return torch.sigmoid(self.adjusted(name, x))
        return self.exclusive_probabilities(name, x)

    def exclusive_probabilities(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """The distribution an exclusive group's logits give (the subclass's link function)."""
        raise NotImplementedError

    def per_image(self, x: torch.Tensor, target: torch.Tensor, cw: torch.Tensor | None) -> torch.Tensor:
        """``(B,)`` loss of each image: ``target`` is ``(B,)`` indices (-1: 0 loss) or ``(B, n)`` probabilities."""
        raise NotImplementedError

    def denominators(self, targets: torch.Tensor, filled: Filled | None = None) -> torch.Tensor:
        """Each group's label count ``(G,)`` float32: labelled images (their class weights) plus
        filled weights; for a multi-label group, known (image, value) pairs plus filled weights."""
        labelled = (targets != IGNORE).float()  # (B, W)
        cols = []
        for j, name in enumerate(self.names):
            if name in self.multi:
                col = labelled[:, self.multi[name]].sum(1)
                if filled is not None and name in filled:
                    col = col + filled[name][1].sum(1)
                cols.append(col)
                continue
            cw = getattr(self, f"cw_{name}")
            col = labelled[:, j] if cw is None else cw[targets[:, j].clamp(min=0)] * labelled[:, j]
            if filled is not None and name in filled:
                probs, weight = filled[name]
                col = col + (weight if cw is None else weight * (probs.float() @ cw))
            cols.append(col)
        return torch.stack(cols, 1).sum(0)  # (G,)

    def forward(
        self, logits: Mapping[str, torch.Tensor], targets: torch.Tensor, denominators: torch.Tensor | None = None,
        filled: Filled | None = None,
    ) -> dict[str, torch.Tensor]:
        """Returns ``{'loss': total, <group>: term, ...}``; every term is a finite scalar.

        ``denominators`` (``(G,)``, default :meth:`denominators` of ``targets`` and ``filled``):
        the label counts to divide by, e.g. those of the global batch under DDP.
        """
        den = self.denominators(targets, filled) if denominators is None else denominators
        total = None
        out: dict[str, torch.Tensor] = {}
        for j, name in enumerate(self.names):
            x = self.adjusted(name, logits[name])  # (B, n)
            cw = getattr(self, f"cw_{name}")
            # Sums without boolean indexing (no host sync on CUDA). With no labels the sum is a
            # zero still connected to this group's logits, so every parameter takes part in the
            # graph, and a zero count divides by 1, not 0: the term is 0, never NaN.
            fill = None if filled is None else filled.get(name)
            total_g = (self._multi_sum(x, targets[:, self.multi[name]], cw, fill) if name in self.multi
                       else self._exclusive_sum(x, targets[:, j], cw, fill))
            term = total_g / torch.where(den[j] > 0, den[j], torch.ones_like(den[j])) * self.group_weights[name]
            out[name] = term
            total = term if total is None else total + term
        out["loss"] = total  # type: ignore[assignment]
        return out

    def _exclusive_sum(self, x: torch.Tensor, target: torch.Tensor, cw: torch.Tensor | None,
                       fill: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        total = self.per_image(x, target, cw).sum()
        if fill is not None:
            probs, weight = fill
            total = total + (weight * self.per_image(x, probs.to(x.dtype), cw)).sum()
        return total

    @staticmethod
    def _multi_sum(x: torch.Tensor, target: torch.Tensor, pos_weight: torch.Tensor | None,
                   fill: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """Summed BCE of the known (image, value) pairs of a multi-label group, plus the filled ones."""
        known = (target != IGNORE).to(x.dtype)  # (B, n): an unknown value adds nothing
        bce = F.binary_cross_entropy_with_logits(x, target.clamp(min=0).to(x.dtype), pos_weight=pos_weight,
                                                 reduction="none")
        total = (bce * known).sum()
        if fill is not None:
            probs, weight = fill
            soft = F.binary_cross_entropy_with_logits(x, probs.to(x.dtype), pos_weight=pos_weight, reduction="none")
            total = total + (weight * soft).sum()
        return total


class MaskedGroupedCrossEntropy(MaskedGroupLoss):
    """The grouped softmax: each group's mean cross-entropy over the images labelled for it."""

    def exclusive_probabilities(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.adjusted(name, x), dim=1)

    def per_image(self, x: torch.Tensor, target: torch.Tensor, cw: torch.Tensor | None) -> torch.Tensor:
        # reduction='none' gives w[t] * ce per image and exactly 0 where t == -1; dividing by
        # the summed weights of the labelled images is F.cross_entropy's weighted mean.
        # Probability targets give -sum_c w_c p_c log q_c, the same for a one-hot p.
        kw = {"ignore_index": IGNORE} if target.dim() == 1 else {}
        return F.cross_entropy(x, target, weight=cw, reduction="none", label_smoothing=self.label_smoothing, **kw)


class MaskedSigmoidBCE(MaskedGroupLoss):
    """The common multi-label recipe, kept as a baseline: independent sigmoids + BCE on one-hot targets.

    Each group's target is the one-hot of its value (or a filled label's probabilities); each
    image's loss is its mean BCE over the group's outputs, times its class weight. Label
    smoothing does not apply.
    """

    def probabilities(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.adjusted(name, x))

    def per_image(self, x: torch.Tensor, target: torch.Tensor, cw: torch.Tensor | None) -> torch.Tensor:
        if target.dim() == 1:
            labelled = (target != IGNORE).to(x.dtype)  # (B,)
            onehot = F.one_hot(target.clamp(min=0), x.shape[1]).to(x.dtype)
            w = labelled if cw is None else labelled * cw[target.clamp(min=0)]
            return F.binary_cross_entropy_with_logits(x, onehot, reduction="none").mean(1) * w
        per = F.binary_cross_entropy_with_logits(x, target, reduction="none").mean(1)
        return per if cw is None else per * (target @ cw)


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


def positive_weights(present: torch.Tensor, known: torch.Tensor, *, power: float = 0.5) -> torch.Tensor:
    """A multi-label group's positive weights: ``(absent / present) ** power`` per value.

    BCE's ``pos_weight``: a value present in 1 of 100 labelled images gets its positives weighted
    ``sqrt(99)``, as :func:`class_weights_from_counts` weights a rare class (``power=1`` is the
    usual ``neg / pos``). A value never present, or never absent, keeps weight 1.
    """
    pos, neg = present.double(), (known - present).double()
    ok = (pos > 0) & (neg > 0)
    return torch.where(ok, (neg / pos.clamp(min=1)).pow(power), torch.ones_like(pos)).float()


def binary_logit_adjustment(present: torch.Tensor, known: torch.Tensor, tau: float) -> torch.Tensor:
    """``tau * log-odds`` of each value's prior in a multi-label group (present among known).

    Logit adjustment for independent sigmoids: the loss sees ``logit + tau * log(p / (1 - p))``,
    so the model's own logit learns the evidence beyond the prior, and a rare value is not
    decided against by its rarity alone. One pseudo-count each way keeps it finite.
    """
    pos, neg = present.double() + 1, (known - present).double() + 1
    return (tau * torch.log(pos / neg)).float()


def logit_adjustment(counts: torch.Tensor, tau: float, *, sigmoid: bool = False) -> torch.Tensor:
    """``tau * log(prior)`` per value from training label counts (``tau * log-odds`` for sigmoids).

    Added to the logits in the loss, it makes the model learn logits that are balanced across
    values (tau = 1 is Ren et al. 2020's balanced softmax). A value never labelled counts as
    seen once: ``log 0`` would push its loss logit to ``-inf`` and leave its real one untrained.
    """
    c = counts.double().clamp(min=1)
    prior = c / c.sum()
    log_prior = torch.log(prior) - (torch.log1p(-prior.clamp(max=1 - 1e-6)) if sigmoid else 0)
    return (tau * log_prior).float()


def log_size_weights(sizes: Sequence[int]) -> list[float]:
    """Group weights ``1 / log(n_values)``, normalised to mean 1 (``--group-balance log``).

    A softmax over ``n`` values starts at a loss of ``log n``: without this, a 43-value group's
    term starts five times a 2-value group's and takes that share of the gradient. Normalising
    the weights to mean 1 keeps the total's scale, so the learning rate means the same.
    """
    inv = [1.0 / math.log(max(int(n), 2)) for n in sizes]
    mean = sum(inv) / len(inv)
    return [w / mean for w in inv]
