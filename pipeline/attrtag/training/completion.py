"""Label completion: a teacher's confident predictions fill the labels an image lacks.

The teacher is the exponential moving average of the weights (:mod:`.ema`), run in eval mode on
the same augmented batch. For each group an image has no label for, its prediction becomes a
label (``hard``: the most probable value; ``soft``: the whole distribution) when the teacher's
top probability reaches a threshold. In a multi-label group each unknown value is filled on its
own (``hard``: present or absent; ``soft``: its probability) when the teacher is that sure of it
either way (``p >= threshold`` or ``p <= 1 - threshold``). Given labels are never touched.

Curriculum (Durand et al. 2019, "Learning a Deep ConvNet for Multi-label Classification with
Partial Labels", section 4: complete a growing share of the missing labels as training goes):
nothing is filled for the first ``complete_start`` epochs, then the threshold falls linearly from
1 to ``complete_threshold`` at the end of training, so the share of filled labels grows as the
teacher gets better. Each decision depends on one image alone, so the filled labels, like the
given ones, add up exactly across torchrun processes.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

from .config import TrainConfig
from .loss import IGNORE, Filled, MaskedGroupLoss


def curriculum_threshold(cfg: TrainConfig, epochs_done: float) -> float:
    """The confidence a filled label needs after ``epochs_done`` (fractional) epochs; above 1: none."""
    if cfg.complete == "none" or epochs_done < cfg.complete_start:
        return float("inf")
    span = max(cfg.epochs - cfg.complete_start, 1e-9)
    t = min(1.0, (epochs_done - cfg.complete_start) / span)
    return 1.0 - (1.0 - cfg.complete_threshold) * t


def fill_labels(
    criterion: MaskedGroupLoss,
    teacher_logits: Mapping[str, torch.Tensor],
    targets: torch.Tensor,
    *,
    mode: str,
    threshold: float,
    weight: float = 1.0,
) -> Filled:
    """Filled labels for the missing entries of ``targets`` ``(B, G)`` where the teacher is confident.

    ``teacher_logits`` are read as the loss reads the student's (:meth:`MaskedGroupLoss.probabilities`,
    logit offsets included), so a filled label means what a given one means.

    Returns:
        ``{group: (probs (B, n), weight (B,))}`` with weight ``weight`` where a label was
        filled and 0 elsewhere (every given label among them); the weight of a multi-label
        group is ``(B, n)``, one per value.
    """
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for j, name in enumerate(criterion.names):
        if name in criterion.multi:
            out[name] = _fill_values(criterion.probabilities(name, teacher_logits[name]).detach().float(),
                                     targets[:, criterion.multi[name]], mode=mode, threshold=threshold, weight=weight)
            continue
        with torch.no_grad():
            p = criterion.probabilities(name, teacher_logits[name]).float()  # (B, n)
            conf, top = p.max(1)
            take = (targets[:, j] == IGNORE) & (conf >= threshold)
            probs = F.one_hot(top, p.shape[1]).float() if mode == "hard" else p
            out[name] = (probs, take.float() * weight)
    return out


def _fill_values(p: torch.Tensor, known: torch.Tensor, *, mode: str, threshold: float,
                 weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A multi-label group's filled values: ``p`` (B, n) the teacher's, ``known`` the given labels."""
    sure = torch.maximum(p, 1 - p) >= threshold
    take = (known == IGNORE) & sure
    probs = (p >= 0.5).float() if mode == "hard" else p
    return probs, take.float() * weight
