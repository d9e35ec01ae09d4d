"""Zero-shot evaluation: per-class accuracy (ZSL), seen/unseen harmonic mean (GZSL), calibration.

Pure numpy over a ``(N, C)`` score matrix (e.g. :attr:`attrtag.zeroshot.ZeroShotResult.scores`)
and ``(N,)`` integer labels (column indices; ``-1`` means "no label" and is skipped). Classes
are given as lists of column indices.

The protocol follows Xian et al., "Zero-Shot Learning - A Comprehensive Evaluation of the Good,
the Bad and the Ugly" (TPAMI 2018):

* accuracy is averaged per class, so a frequent class cannot hide a rare one;
* ZSL: only unseen classes are candidates, and only their images are evaluated;
* GZSL: candidates are seen + unseen; accuracy on seen images (``s``) and on unseen images
  (``u``), each per-class averaged, and their harmonic mean ``H = 2su / (s + u)``, which is
  low when either collapses.

Scores of seen classes tend to be higher (the model was trained on their attribute values), so
GZSL predictions collapse onto them. Calibrated stacking (Chao et al., "An Empirical Study and
Analysis of Generalized Zero-Shot Learning for Object Recognition in the Wild", ECCV 2016)
subtracts a constant ``gamma`` from every seen-class score; ``gamma`` is chosen on a validation
split to maximise ``H`` and then applied unchanged to the test split.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import AttrtagError

#: Above this many distinct decision points, :func:`choose_gamma` searches quantiles instead.
_MAX_GAMMA_CANDIDATES = 512


@dataclass(frozen=True)
class ZslAccuracy:
    """Per-class averaged accuracy with only unseen classes as candidates."""

    top1: float
    top5: float


@dataclass(frozen=True)
class GzslAccuracy:
    """Seen/unseen per-class accuracy with all classes as candidates, at one ``gamma``."""

    seen: float
    unseen: float
    harmonic: float
    gamma: float = 0.0


@dataclass(frozen=True)
class GzslReport:
    """Test-split GZSL accuracy without and with calibrated stacking (``calibrated.gamma``
    was chosen on the validation split)."""

    uncalibrated: GzslAccuracy
    calibrated: GzslAccuracy


def per_class_accuracy(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    k: int = 1,
    candidates: Sequence[int] | None = None,
    classes: Sequence[int] | None = None,
) -> float:
    """Top-``k`` accuracy averaged over classes.

    Args:
        scores: ``(N, C)`` class scores, higher is better.
        labels: ``(N,)`` true class indices; ``-1`` is skipped.
        k: a hit when the true class is among the ``k`` best candidates (all are hits when
            there are at most ``k`` candidates). Ties go to the lower class index.
        candidates: the classes the prediction may choose from (default: all ``C``).
        classes: whose images are evaluated (default: every labelled class); classes without
            images are left out of the average. Must be candidates.

    Returns:
        The mean over evaluated classes of the fraction of their images that are hits.

    Raises:
        AttrtagError: bad shapes or indices, or no image of the evaluated classes.
    """
    scores, labels = _checked(scores, labels)
    num_classes = scores.shape[1]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise AttrtagError(f"per_class_accuracy: k must be an integer >= 1, got {k!r}")
    cand = np.arange(num_classes) if candidates is None else _indices(candidates, num_classes, "candidates")
    evaluated = np.unique(labels[labels >= 0]) if classes is None else _indices(classes, num_classes, "classes")
    outside = np.setdiff1d(evaluated, cand)
    if outside.size:
        raise AttrtagError(f"per_class_accuracy: classes {outside.tolist()} are evaluated but not candidates")
    sel = np.isin(labels, evaluated)
    if not sel.any():
        raise AttrtagError(f"per_class_accuracy: no image is labelled with any of classes {evaluated.tolist()}")
    y = labels[sel]
    sub = scores[sel][:, cand]  # (n, Cc)
    pos = np.searchsorted(cand, y)  # column of the true class inside sub
    true = sub[np.arange(len(y)), pos][:, None]
    # Rank of the true class: candidates scoring higher, plus equal ones with a lower index
    # (the order argmax and a stable sort would put first).
    ahead = (sub > true) | ((sub == true) & (np.arange(len(cand))[None, :] < pos[:, None]))
    hit = ahead.sum(axis=1) < k
    return float(np.mean([hit[y == c].mean() for c in np.unique(y)]))


def evaluate_zsl(scores: np.ndarray, labels: np.ndarray, unseen: Sequence[int]) -> ZslAccuracy:
    """Conventional ZSL: images of unseen classes, choosing among unseen classes only.

    Args:
        scores: ``(N, C)`` class scores.
        labels: ``(N,)`` true class indices (``-1`` and seen-class images are skipped).
        unseen: the unseen classes.

    Returns:
        Per-class averaged top-1 and top-5 accuracy.
    """
    return ZslAccuracy(
        top1=per_class_accuracy(scores, labels, k=1, candidates=unseen, classes=unseen),
        top5=per_class_accuracy(scores, labels, k=5, candidates=unseen, classes=unseen),
    )


def harmonic_mean(a: float, b: float) -> float:
    """``2ab / (a + b)``; 0 when both are 0."""
    return 0.0 if a + b == 0 else 2.0 * a * b / (a + b)


def calibrated_stacking(scores: np.ndarray, seen: Sequence[int], gamma: float) -> np.ndarray:
    """Subtract ``gamma`` from the seen classes' scores (Chao et al. 2016).

    Args:
        scores: ``(N, C)`` class scores; left unchanged.
        seen: the seen classes.
        gamma: the constant; positive values move predictions towards unseen classes.

    Returns:
        A calibrated ``(N, C)`` copy.
    """
    out = np.array(scores, dtype=np.float64)
    if out.ndim != 2:
        raise AttrtagError(f"calibrated_stacking: scores must be (N, C), got shape {out.shape}")
    out[:, _indices(seen, out.shape[1], "seen")] -= gamma
    return out


def evaluate_gzsl(
    scores: np.ndarray,
    labels: np.ndarray,
    seen: Sequence[int],
    unseen: Sequence[int],
    *,
    gamma: float = 0.0,
) -> GzslAccuracy:
    """Generalised ZSL: all seen + unseen classes are candidates.

    Args:
        scores: ``(N, C)`` class scores.
        labels: ``(N,)`` true class indices (``-1`` skipped).
        seen: classes with training images.
        unseen: classes described only by rules; disjoint from ``seen``.
        gamma: calibrated-stacking constant subtracted from seen-class scores (0: none).

    Returns:
        Per-class averaged top-1 accuracy on seen images, on unseen images, their harmonic mean.

    Raises:
        AttrtagError: overlapping class sets, or no image of seen or of unseen classes.
    """
    scores, labels = _checked(scores, labels)
    s_idx, u_idx = _disjoint(seen, unseen, scores.shape[1])
    calibrated = calibrated_stacking(scores, s_idx, gamma)
    both = np.union1d(s_idx, u_idx)
    acc_s = per_class_accuracy(calibrated, labels, candidates=both, classes=s_idx)
    acc_u = per_class_accuracy(calibrated, labels, candidates=both, classes=u_idx)
    return GzslAccuracy(seen=acc_s, unseen=acc_u, harmonic=harmonic_mean(acc_s, acc_u), gamma=float(gamma))


def choose_gamma(
    scores: np.ndarray,
    labels: np.ndarray,
    seen: Sequence[int],
    unseen: Sequence[int],
    *,
    gammas: Sequence[float] | None = None,
) -> float:
    """The calibrated-stacking ``gamma`` that maximises the GZSL harmonic mean on these images.

    Args:
        scores: ``(N, C)`` validation scores.
        labels: ``(N,)`` validation labels.
        seen: the seen classes.
        unseen: the unseen classes.
        gammas: the grid to search. Default: 0 and one value inside every interval between
            the points where a validation decision flips (the per-image gap between the best
            seen and the best unseen score), which covers every distinct outcome.

    Returns:
        The best ``gamma``; among equals, the one closest to 0 (the least intervention).
    """
    scores, labels = _checked(scores, labels)
    s_idx, u_idx = _disjoint(seen, unseen, scores.shape[1])
    if gammas is None:
        grid = _decision_points(scores, labels, s_idx, u_idx)
    else:
        grid = np.asarray(gammas, dtype=np.float64).ravel()
        if grid.size == 0 or not np.all(np.isfinite(grid)):
            raise AttrtagError(f"choose_gamma: gammas must be a non-empty list of finite numbers, got {gammas!r}")
    best_key, best_gamma = None, 0.0
    for g in grid:
        h = evaluate_gzsl(scores, labels, s_idx, u_idx, gamma=float(g)).harmonic
        key = (h, -abs(g), -g)  # highest H, then smallest |gamma|, then the smaller gamma
        if best_key is None or key > best_key:
            best_key, best_gamma = key, float(g)
    return best_gamma


def evaluate_gzsl_calibrated(
    val_scores: np.ndarray,
    val_labels: np.ndarray,
    test_scores: np.ndarray,
    test_labels: np.ndarray,
    seen: Sequence[int],
    unseen: Sequence[int],
    *,
    gammas: Sequence[float] | None = None,
) -> GzslReport:
    """GZSL on the test split without and with calibrated stacking, ``gamma`` chosen on val.

    Args:
        val_scores: ``(N_val, C)`` validation scores (used only to choose ``gamma``).
        val_labels: ``(N_val,)`` validation labels.
        test_scores: ``(N_test, C)`` test scores.
        test_labels: ``(N_test,)`` test labels.
        seen: the seen classes.
        unseen: the unseen classes.
        gammas: the grid for :func:`choose_gamma` (default: its exact search).

    Returns:
        Both results, so a report can show whether calibration undoes the collapse onto seen
        classes.
    """
    gamma = choose_gamma(val_scores, val_labels, seen, unseen, gammas=gammas)
    return GzslReport(
        uncalibrated=evaluate_gzsl(test_scores, test_labels, seen, unseen),
        calibrated=evaluate_gzsl(test_scores, test_labels, seen, unseen, gamma=gamma),
    )


def _checked(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 ``(N, C)`` scores and int ``(N,)`` labels in ``[-1, C)``."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] == 0 or s.shape[1] == 0:
        raise AttrtagError(f"scores must be a non-empty (N, C) matrix, got shape {s.shape}")
    if np.isnan(s).any():
        raise AttrtagError("scores contain NaN")
    y = np.asarray(labels)
    if y.shape != (s.shape[0],):
        raise AttrtagError(f"labels must have shape ({s.shape[0]},) to match scores, got {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise AttrtagError(f"labels must be integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    bad = (y < -1) | (y >= s.shape[1])
    if bad.any():
        raise AttrtagError(
            f"label {int(y[bad][0])} at row {int(np.flatnonzero(bad)[0])} is not a class index in "
            f"[0, {s.shape[1]}) (use -1 for 'no label')"
        )
    return s, y


def _indices(idx: Sequence[int], num_classes: int, what: str) -> np.ndarray:
    """Sorted unique class indices, each in ``[0, num_classes)``; at least one."""
    a = np.asarray(idx)
    if a.size == 0:
        raise AttrtagError(f"{what}: no classes given")
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise AttrtagError(f"{what}: expected a list of class indices, got {idx!r}")
    if a.min() < 0 or a.max() >= num_classes:
        raise AttrtagError(f"{what}: class indices must be in [0, {num_classes}), got {a.tolist()}")
    return np.unique(a)


def _disjoint(seen: Sequence[int], unseen: Sequence[int], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    s, u = _indices(seen, num_classes, "seen"), _indices(unseen, num_classes, "unseen")
    both = np.intersect1d(s, u)
    if both.size:
        raise AttrtagError(f"classes {both.tolist()} are listed as both seen and unseen")
    return s, u


def _decision_points(scores: np.ndarray, labels: np.ndarray, seen: np.ndarray, unseen: np.ndarray) -> np.ndarray:
    """Candidate gammas: 0, below/above every flip point, and the midpoints between them."""
    sel = np.isin(labels, np.union1d(seen, unseen))
    # An image's top-1 moves from the best seen to the best unseen class once gamma exceeds this gap.
    gap = scores[sel][:, seen].max(axis=1) - scores[sel][:, unseen].max(axis=1)
    if gap.size == 0:  # no evaluable image: evaluate_gzsl will say so
        return np.zeros(1)
    points = np.unique(gap)
    if points.size > _MAX_GAMMA_CANDIDATES:
        points = np.unique(np.quantile(gap, np.linspace(0.0, 1.0, _MAX_GAMMA_CANDIDATES)))
    mids = (points[:-1] + points[1:]) / 2
    return np.concatenate([[0.0, points[0] - 1.0, points[-1] + 1.0], mids])
