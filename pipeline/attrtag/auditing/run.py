"""An audit from start to end: which images, which trainings, which probabilities, then the scores.

Methods (``method``), each measured in ``scripts/README.md`` (*Label audit*):

- ``oof`` (default): out-of-fold predictions of K trainings (:mod:`.folds`);
- ``both``: the same K trainings, each image scored with the mean of its out-of-fold prediction
  and its training dynamics in the other folds' trainings (no training more than ``oof``);
- ``dynamics``: training dynamics of one training on every labelled image (:mod:`.dynamics`).

Why ``oof``: on the benchmark ``oof`` and ``dynamics`` tie on the ranking (precision at k, the
mean over three groups and two noise settings 0.777 and 0.778) and ``both`` trails with half the
labels unknown (6 points on gender); a held-out prediction does not depend on how far a training
has fitted the wrong labels, the dynamics of a long run that memorises them would. ``dynamics``
is the cheaper choice (one training instead of about 1.3).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from ..data.manifest import Manifest, Sample
from ..errors import AttrtagError
from ..schema import Schema
from ..training.config import TrainConfig
from .folds import FoldPredictions, fold_predictions
from .labels import AuditLabel, GroupSummary, score_manifest
from .scores import RANKINGS

_logger = logging.getLogger(__name__)

METHODS = ("oof", "both", "dynamics")
#: The method and ranking the benchmark chose (scripts/README.md, *Label audit*).
DEFAULT_METHOD, DEFAULT_RANKING, DEFAULT_FOLDS = "oof", "self_confidence", 2

Progress = Callable[[Iterable[Any], str, int], Iterable[Any]]


@dataclass
class AuditResult:
    """Every given label that could be checked, most suspect first, and a summary per group."""

    labels: list[AuditLabel]
    summary: list[GroupSummary]
    method: str
    folds: int  # K of the out-of-fold trainings (1: dynamics alone)
    rank_by: str
    trainings: int
    seconds: float
    samples: list[Sample]  # the images audited, in the order of the rows of ``probs``
    probs: dict[str, np.ndarray]  # the probabilities scored, per group (N, n_g); NaN: not checked
    predictions: FoldPredictions
    not_checked: dict[str, str] = field(default_factory=dict)  # images without a prediction, why

    @property
    def suspects(self) -> list[AuditLabel]:
        """The flagged labels, most suspect first."""
        return [x for x in self.labels if x.flagged]


def check_options(method: str, folds: int, rank_by: str) -> None:
    """Refuse an unknown method or ranking and a K the method cannot use, before any work."""
    if method not in METHODS:
        raise AttrtagError(f"`method={method}`: not one of {', '.join(METHODS)}")
    if rank_by not in RANKINGS:
        raise AttrtagError(f"`rank_by={rank_by}`: not one of {', '.join(RANKINGS)}")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise AttrtagError(f"`folds={folds}`: must be at least 2 (each image is predicted by a training that "
                           "held it out; 2 costs about one ordinary training)")


def audit_manifest(
    cfg: TrainConfig, schema: Schema, manifest: Manifest, *, method: str = DEFAULT_METHOD, folds: int = DEFAULT_FOLDS,
    rank_by: str = DEFAULT_RANKING, progress: Progress | None = None, on_fold: Callable[[int, int], Any] | None = None,
) -> AuditResult:
    """Train, predict and score every given label of ``manifest`` (every split: pass a manifest
    of the rows to audit). See :func:`attrtag.audit` for the arguments."""
    check_options(method, folds, rank_by)
    samples = [s for s in manifest.samples if s.multi or any(i >= 0 for i in s.labels)]
    if len(samples) < 2 * folds:
        raise AttrtagError(f"{manifest.source}: {len(samples)} labelled image(s), too few to audit with "
                           f"`folds={folds}` (each fold's training needs images, and so does each held-out fold)")
    t0 = time.perf_counter()
    k = 1 if method == "dynamics" else folds
    preds = fold_predictions(cfg, schema, samples, folds=k, source=manifest.source, progress=progress,
                             on_fold=on_fold)
    probs = chosen_probs(preds, method)
    labels, summary = score_manifest(schema, samples, probs, rank_by=rank_by)
    unchecked = {s.path: preds.failed.get(s.path, "no prediction")
                 for i, s in enumerate(samples) if all(np.isnan(p[i]).any() for p in probs.values())}
    return AuditResult(labels=labels, summary=summary, method=method, folds=k, rank_by=rank_by,
                       trainings=preds.trainings, seconds=time.perf_counter() - t0, samples=samples, probs=probs,
                       predictions=preds, not_checked=unchecked)


def chosen_probs(preds: FoldPredictions, method: str) -> dict[str, np.ndarray]:
    """The probabilities ``method`` scores: out-of-fold, training dynamics, or their mean."""
    if method == "dynamics" or preds.out_of_fold is None:
        return preds.dynamics
    if method == "oof":
        return preds.out_of_fold
    return {g: (preds.out_of_fold[g] + preds.dynamics[g]) / 2.0 for g in preds.dynamics}
