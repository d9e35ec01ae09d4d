"""How likely each given label is wrong: a pure function of probabilities and labels (no torch, no I/O).

The probabilities must come from predictions the model did not fit on that image (held-out
folds) or from training dynamics (:mod:`.dynamics`); fed a model's probabilities on its own
training images, every label looks right.

Per group of ``n`` labelled images with ``C`` values (a multi-label value is a group of two:
absent, present), :func:`score_labels` gives

- a **score** per label, higher = more likely wrong: ``self_confidence`` is ``1 - p(given)``;
  ``normalized_margin`` is ``(max other p - p(given) + 1) / 2`` (cleanlab's two rankings, turned
  so that a high score is a suspect; both in [0, 1]);
- **flagged**: confident learning (Northcutt et al. 2021) made stricter. A value is
  *confidently* the image's when its probability reaches that value's threshold, the mean
  probability the model gives it on the images labelled with it (per-value thresholds, not 0.5,
  because a model is less sure of rare values on every image, right or wrong). A label is
  flagged when another value is confidently the image's (the most probable of those that are)
  **and** more probable than the given value. Confident learning alone flags every label whose
  image some other value clears its threshold on; with the benchmark's weak models that was 3 to
  5 times the labels changed, at precision 0.16 to 0.30 (``scripts/README.md``, *Label audit*);
- the **suggested** value: the confident value of a flagged label, else the most probable value
  other than the given one;
- the **estimated number of errors**: the confident joint (given value x confident value, the
  flagged labels off the diagonal, every other label with a confident value on it) calibrated so
  that each row holds as many images as carry that given value; its off-diagonal mass (cleanlab's
  calibrated estimate, with the stricter rule). Measured: within 2 points of the truth where
  the model is good (masterCategory), 2 to 4 times it where the model is weak (gender).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RANKINGS = ("self_confidence", "normalized_margin")


@dataclass(frozen=True)
class LabelScores:
    """The scorer's answer for one group's ``n`` labels (arrays of length ``n``)."""

    score: np.ndarray  # float64, higher = more likely wrong
    suggested: np.ndarray  # int64, the most probable other value
    p_given: np.ndarray  # float64
    p_suggested: np.ndarray  # float64
    flagged: np.ndarray  # bool: confident learning says another value is the image's
    estimated_errors: float  # calibrated confident joint, off-diagonal

    def __len__(self) -> int:
        return len(self.score)


def score_labels(probs: np.ndarray, given: np.ndarray, *, rank_by: str = "self_confidence") -> LabelScores:
    """Score ``n`` given labels of one group.

    Args:
        probs: ``(n, C)`` probabilities of each value (rows need not sum to 1 exactly).
        given: ``(n,)`` the given value of each label, in ``0..C-1`` (no unknowns: they are not labels).
        rank_by: ``self_confidence`` or ``normalized_margin`` (see the module docstring).

    Returns:
        The scores, suggestions, flags and the estimated number of errors.
    """
    probs = np.asarray(probs, dtype=np.float64)
    given = np.asarray(given, dtype=np.int64)
    if rank_by not in RANKINGS:
        raise ValueError(f"rank_by must be one of {RANKINGS}, got {rank_by!r}")
    if probs.ndim != 2 or given.shape != (len(probs),):
        raise ValueError(f"probs (n, C) and given (n,) expected, got {probs.shape} and {given.shape}")
    n, c = probs.shape
    if n and (given.min() < 0 or given.max() >= c):
        raise ValueError(f"given values must lie in 0..{c - 1}")
    rows = np.arange(n)
    p_given = probs[rows, given] if n else np.zeros(0)
    others = probs.copy()
    others[rows, given] = -np.inf
    best_other = others.argmax(1) if c > 1 else np.zeros(n, np.int64)
    if rank_by == "self_confidence":
        score = 1.0 - p_given
    else:
        score = (probs[rows, best_other] - p_given + 1.0) / 2.0 if c > 1 else 1.0 - p_given
    flagged, confident, estimated = confident_learning(probs, given)
    suggested = np.where(flagged, confident, best_other)
    p_suggested = probs[rows, suggested] if c > 1 else np.zeros(n)
    return LabelScores(score=np.clip(score, 0.0, 1.0), suggested=suggested.astype(np.int64), p_given=p_given,
                       p_suggested=p_suggested, flagged=flagged, estimated_errors=estimated)


def per_value_thresholds(probs: np.ndarray, given: np.ndarray) -> np.ndarray:
    """``(C,)`` the mean probability of each value over the images labelled with it (inf: no such image)."""
    c = probs.shape[1]
    out = np.full(c, np.inf)
    for j in range(c):
        mine = given == j
        if mine.any():
            out[j] = probs[mine, j].mean()
    return out


def confident_learning(probs: np.ndarray, given: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """``(flagged, confident value, estimated errors)``: the labels another value is confidently
    and more probably the image's, that value, and the off-diagonal mass of the calibrated joint."""
    n, c = probs.shape
    if n == 0 or c < 2:
        return np.zeros(n, bool), np.asarray(given, np.int64).copy(), 0.0
    rows = np.arange(n)
    above = probs >= per_value_thresholds(probs, given)[None, :]
    confident = np.where(above, probs, -np.inf).argmax(1)
    has = above.any(1)
    flagged = has & (confident != given) & (probs[rows, confident] > probs[rows, given])
    joint = np.zeros((c, c))
    np.add.at(joint, (given[has], np.where(flagged, confident, given)[has]), 1.0)
    counts = np.bincount(given, minlength=c).astype(np.float64)
    totals = joint.sum(1)
    seen = totals > 0
    # Calibrate: row i holds counts[i] images in all; its off-diagonal share is the error estimate.
    off = (totals[seen] - np.diag(joint)[seen]) / totals[seen] * counts[seen]
    return flagged, confident, float(off.sum())


def two_states(p_present: np.ndarray) -> np.ndarray:
    """A multi-label value's sigmoid as a two-value group: ``(n, 2)`` = (absent, present)."""
    p = np.asarray(p_present, dtype=np.float64)
    return np.stack([1.0 - p, p], axis=1)
