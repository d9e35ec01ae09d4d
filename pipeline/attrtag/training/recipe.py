"""The optimisation recipe: which loss, AdamW with its parameter groups, warm-up + cosine schedule.

Built once per run by :func:`attrtag.training.loop.prepare_run`; options that change what is
optimised (loss weighting, schedules) belong here rather than in the loop.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import torch
from torch import nn

from ..errors import AttrtagError
from ..schema import Schema
from .config import TrainConfig
from .loss import (
    MaskedGroupedCrossEntropy, MaskedGroupLoss, MaskedSigmoidBCE, binary_logit_adjustment, class_weights_from_counts,
    log_size_weights, logit_adjustment, positive_weights,
)


def make_criterion(
    cfg: TrainConfig, schema: Schema, class_weights: dict[str, torch.Tensor] | None = None,
    logit_offsets: dict[str, torch.Tensor] | None = None,
) -> MaskedGroupLoss:
    """The loss named by ``cfg.loss``, its group weights (``group_weights`` times ``group_balance``)."""
    weights = {n: float(cfg.group_weights.get(n, 1.0)) for n in cfg.group_weights}
    if cfg.group_balance == "log":
        for name, w in zip(schema.names, log_size_weights(schema.sizes)):
            weights[name] = weights.get(name, 1.0) * w
    kind = {"grouped_softmax": MaskedGroupedCrossEntropy, "sigmoid_bce": MaskedSigmoidBCE}.get(cfg.loss)
    if kind is None:
        raise AttrtagError(f"loss '{cfg.loss}' is not one of grouped_softmax, sigmoid_bce")
    return kind(schema, group_weights=weights, class_weights=class_weights, label_smoothing=cfg.label_smoothing,
                logit_offsets=logit_offsets)


def criterion_for(cfg: TrainConfig, schema: Schema, counts: Mapping[str, Sequence[int]],
                  totals: Mapping[str, Sequence[int]] | None = None) -> MaskedGroupLoss:
    """:func:`make_criterion` with what the training label ``counts`` give: class weights, logit adjustment.

    ``totals``: per multi-label group, the images each value is known in (its ``counts`` are the
    images it is present in): positive weights and the values' prior log-odds come from both.
    """
    class_weights = offsets = None
    if cfg.class_weights:
        class_weights = {g.name: positive_weights(*_present_known(g.name, counts, totals)) if g.multi
                         else class_weights_from_counts(torch.tensor(counts[g.name])) for g in schema}
    if cfg.logit_adjust:
        offsets = {g.name: binary_logit_adjustment(*_present_known(g.name, counts, totals), cfg.logit_adjust)
                   if g.multi else logit_adjustment(torch.tensor(counts[g.name]), cfg.logit_adjust,
                                                    sigmoid=cfg.loss == "sigmoid_bce") for g in schema}
    return make_criterion(cfg, schema, class_weights, offsets)


def _present_known(name: str, counts: Mapping[str, Sequence[int]],
                   totals: Mapping[str, Sequence[int]] | None) -> tuple[torch.Tensor, torch.Tensor]:
    if totals is None or name not in totals:
        raise AttrtagError(f"multi-label group '{name}': how many images each value is known in is not recorded")
    return torch.tensor(counts[name]), torch.tensor(totals[name])


def lr_lambda(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW without weight decay on norms and biases (timm's ``param_groups_weight_decay``).

    With a ``layer_decay`` below 1, the backbone's parameters are
    grouped by depth as timm's ``param_groups_layer_decay`` does (the model's ``group_matcher``):
    the head learns at ``lr``, the backbone's top block at ``lr * decay``, the stem at the smallest
    rate, so fine-tuning moves the general early features least. Each group says whether it is
    the backbone's (``"backbone"``), for :func:`make_scheduler`'s head-only epochs.
    """
    groups: list[dict] = []
    backbone = getattr(model, "backbone", None)
    decay = cfg.layer_decay
    if backbone is not None and decay < 1.0:
        from timm.optim import param_groups_layer_decay

        # timm gives the backbone's top block scale 1, shared with a classifier that num_classes=0
        # removed; one more factor makes our head the top layer, alone at lr.
        for g in param_groups_layer_decay(backbone, weight_decay=cfg.weight_decay, layer_decay=decay):
            groups.append({"params": g["params"], "weight_decay": g["weight_decay"],
                           "lr": cfg.lr * decay * g["lr_scale"], "backbone": True})
    else:
        groups += _weight_decay_groups(cfg, backbone.parameters() if backbone is not None else [], backbone=True)
    mine = {id(p) for g in groups for p in g["params"]}
    groups += _weight_decay_groups(cfg, [p for p in model.parameters() if id(p) not in mine], backbone=False)
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr)


def _weight_decay_groups(cfg: TrainConfig, params: Iterable[nn.Parameter], *, backbone: bool) -> list[dict]:
    decay, no_decay = [], []
    for p in params:
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": cfg.weight_decay, "lr": cfg.lr, "backbone": backbone},
            {"params": no_decay, "weight_decay": 0.0, "lr": cfg.lr, "backbone": backbone}]


def make_scheduler(
    cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule: ``cfg.warmup_epochs`` of linear warm-up, then cosine to ``lr * min_lr_ratio``.

    With ``head_epochs`` the backbone's groups stay at 0 for
    those epochs while the head learns on the pretrained features (linear probing, then
    fine-tuning: Kumar et al. 2022), then warm up and decay over the remaining steps, so a
    random head's first large gradients never reach the pretrained weights.
    """
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))
    head_steps = min(total_steps, int(round(cfg.head_epochs * steps_per_epoch)))

    def head(s: int) -> float:
        return lr_lambda(s, warmup_steps=warmup_steps, total_steps=total_steps, min_ratio=cfg.min_lr_ratio)

    def backbone(s: int) -> float:
        if s < head_steps:
            return 0.0
        return lr_lambda(s - head_steps, warmup_steps=warmup_steps, total_steps=total_steps - head_steps,
                         min_ratio=cfg.min_lr_ratio)

    lambdas = [backbone if g.get("backbone") and head_steps else head for g in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)


def hold_idle_backbone(optimizer: torch.optim.Optimizer, *, distributed: bool) -> None:
    """Backbone groups at lr 0 this step (``head_epochs``) compute no gradients: backward stops at
    the head instead of running through a backbone that will not move.

    Not under DDP, whose reducer expects a gradient for every parameter it wraps at every step.
    Called before each step: the groups' lr is what the scheduler set for it.
    """
    if distributed:
        return
    for group in optimizer.param_groups:
        if group.get("backbone"):
            learns = group["lr"] > 0
            for p in group["params"]:
                if p.requires_grad != learns:
                    p.requires_grad_(learns)
