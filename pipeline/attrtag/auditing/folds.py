"""Predictions the model did not fit on that image: K trainings, each holding out one fold.

Which images share a fold is drawn once from the seed (a permutation, so the folds differ in
size by at most one image). Each fold's training sees the other K-1 folds for the run's number
of epochs (with K = 2, half the images: the K trainings together cost about one ordinary
training, plus one prediction per image), records their training dynamics (:mod:`.dynamics`)
and predicts its held-out fold. One image thus gets an out-of-fold prediction from the one
training that never saw it, and training dynamics from the K-1 that did.

``folds=1`` is the training-dynamics audit alone: one training on every labelled image, no
held-out prediction (the cost of one ordinary training).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..data.manifest import Sample
from ..schema import Schema
from ..training.config import TrainConfig
from .dynamics import Record, train_and_record

_logger = logging.getLogger(__name__)

Progress = Callable[[Iterable[Any], str, int], Iterable[Any]]


def assign_folds(n: int, k: int, seed: int) -> np.ndarray:
    """``(n,)`` fold of each image, ``0..k-1``, balanced, drawn from ``seed``."""
    order = np.random.default_rng(seed).permutation(n)
    folds = np.empty(n, np.int64)
    folds[order] = np.arange(n) % k
    return folds


@dataclass
class FoldPredictions:
    """Per group ``(N, n_g)`` probabilities of the samples, in their order (NaN rows: no prediction)."""

    out_of_fold: dict[str, np.ndarray] | None  # None with one fold
    dynamics: dict[str, np.ndarray]  # mean probabilities while being trained on
    margins: dict[str, np.ndarray]  # mean logit margin of the given label (AUM)
    folds: np.ndarray
    trainings: int
    failed: dict[str, str] = field(default_factory=dict)  # images that could not be decoded


def fold_predictions(
    cfg: TrainConfig, schema: Schema, samples: Sequence[Sample], *, folds: int, source: str = "manifest",
    progress: Progress | None = None, on_fold: Callable[[int, int], Any] | None = None,
) -> FoldPredictions:
    """Train ``folds`` times (once with ``folds=1``) and gather each image's predictions.

    Args:
        cfg: the training options of every fold.
        schema: the groups.
        samples: the labelled images to audit.
        folds: K (1: training dynamics only, one training on all of them).
        source: the manifest, named in errors.
        progress: optional progress wrapper.
        on_fold: called with (fold, folds) before each training starts (1-based).
    """
    n = len(samples)
    fold_of = assign_folds(n, max(folds, 1), cfg.seed)
    total = Record.empty(schema, n)
    oof = {g.name: np.full((n, len(g)), np.nan) for g in schema} if folds > 1 else None
    failed: dict[str, str] = {}
    position = {id(s): i for i, s in enumerate(samples)}
    for f in range(max(folds, 1)):
        if on_fold is not None:
            on_fold(f + 1, max(folds, 1))
        train_rows = np.flatnonzero(fold_of != f) if folds > 1 else np.arange(n)
        held_rows = np.flatnonzero(fold_of == f) if folds > 1 else np.zeros(0, np.int64)
        _logger.info("audit training %d of %d: %d images, %d held out", f + 1, max(folds, 1), len(train_rows),
                     len(held_rows))
        trained = train_and_record(cfg, schema, [samples[i] for i in train_rows], [samples[i] for i in held_rows],
                                   source=source, desc=f"fold {f + 1}/{folds}" if folds > 1 else "",
                                   progress=progress)
        _accumulate(total, trained.record, train_rows)
        failed.update(trained.failed)
        if oof is not None and trained.held_out is not None:
            rows = [position[id(s)] for s in trained.held_out.samples]
            for g, p in trained.held_out.probs.items():
                oof[g][rows] = p
            failed.update(dict(trained.held_out.failed))
    probs, margins = total.means()
    return FoldPredictions(out_of_fold=oof, dynamics=probs, margins=margins, folds=fold_of,
                           trainings=max(folds, 1), failed=failed)


def _accumulate(total: Record, part: Record, rows: np.ndarray) -> None:
    """Add one training's sums (rows in its own order) into the sums of all samples."""
    total.seen[rows] += part.seen
    for g in total.probs:
        total.probs[g][rows] += part.probs[g]
        total.margins[g][rows] += part.margins[g]
