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
split to maximise ``H`` and then applied unchanged to the test split. Every ``gamma`` gives one
point (unseen accuracy, seen accuracy); the area under that seen-unseen curve (AUSUC, Chao et al.
2016) compares two models without choosing a ``gamma`` at all.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import AttrtagError
from ._metric_inputs import check_scores, class_indices, seen_unseen_indices


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
    scores, labels = check_scores(scores, labels)
    num_classes = scores.shape[1]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise AttrtagError(f"per_class_accuracy: k must be an integer >= 1, got {k!r}")
    cand = np.arange(num_classes) if candidates is None else class_indices(candidates, num_classes, "candidates")
    evaluated = np.unique(labels[labels >= 0]) if classes is None else class_indices(classes, num_classes, "classes")
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
    out[:, class_indices(seen, out.shape[1], "seen")] -= gamma
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
    scores, labels = check_scores(scores, labels)
    s_idx, u_idx = seen_unseen_indices(seen, unseen, scores.shape[1])
    calibrated = calibrated_stacking(scores, s_idx, gamma)
    both = np.union1d(s_idx, u_idx)
    acc_s = per_class_accuracy(calibrated, labels, candidates=both, classes=s_idx)
    acc_u = per_class_accuracy(calibrated, labels, candidates=both, classes=u_idx)
    return GzslAccuracy(seen=acc_s, unseen=acc_u, harmonic=harmonic_mean(acc_s, acc_u), gamma=float(gamma))


@dataclass(frozen=True)
class SeenUnseenCurve:
    """GZSL accuracy at every calibration constant: one point per interval between flip points.

    Attributes:
        gammas: ``(K,)`` ascending; one ``gamma`` inside each interval where no decision changes
            (the first is below every flip point, so seen classes win every image; the last is
            above every one, so unseen classes win every image).
        seen: ``(K,)`` per-class accuracy on seen images at each ``gamma``.
        unseen: ``(K,)`` per-class accuracy on unseen images.
    """

    gammas: np.ndarray
    seen: np.ndarray
    unseen: np.ndarray

    @property
    def harmonic(self) -> np.ndarray:
        """``(K,)`` harmonic mean of :attr:`seen` and :attr:`unseen`."""
        total = self.seen + self.unseen
        return np.divide(2 * self.seen * self.unseen, total, out=np.zeros_like(total), where=total > 0)

    @property
    def area(self) -> float:
        """AUSUC: the area under the curve of seen accuracy over unseen accuracy (trapezoids).

        The curve runs from ``(0, seen accuracy among seen candidates only)`` to
        ``(unseen accuracy among unseen candidates only, 0)``; 1 only for a perfect model.
        """
        x, y = self.unseen, self.seen  # x grows and y falls as gamma grows
        return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def seen_unseen_curve(
    scores: np.ndarray,
    labels: np.ndarray,
    seen: Sequence[int],
    unseen: Sequence[int],
    *,
    gammas: Sequence[float] | None = None,
) -> SeenUnseenCurve:
    """GZSL seen and unseen accuracy for many calibration constants at once.

    Exact and ``O((N + K) log N)``: an image's prediction switches from its best seen to its
    best unseen class once ``gamma`` passes the gap between their scores, and whether that
    prediction is right does not depend on ``gamma``; so each accuracy is a sum of per-image
    weights (``1 / (images of its class * classes)``, as :func:`per_class_accuracy` averages)
    over the images on the right side of ``gamma``. Agrees with :func:`evaluate_gzsl` at
    every ``gamma`` (ties between a seen and an unseen class go to the lower index, as there).

    Args:
        scores: ``(N, C)`` class scores.
        labels: ``(N,)`` true class indices (``-1`` skipped).
        seen: the seen classes.
        unseen: the unseen classes; disjoint from ``seen``.
        gammas: where to evaluate (default: every distinct outcome, see :class:`SeenUnseenCurve`).

    Returns:
        The curve, ``gammas`` ascending.

    Raises:
        AttrtagError: bad inputs, or no image of a seen or of an unseen class.
    """
    scores, labels = check_scores(scores, labels)
    s_idx, u_idx = seen_unseen_indices(seen, unseen, scores.shape[1])
    both = np.union1d(s_idx, u_idx)
    for what, idx in (("seen", s_idx), ("unseen", u_idx)):
        if not np.isin(labels, idx).any():
            raise AttrtagError(f"no image is labelled with any of the {what} classes {idx.tolist()}")
    sel = np.isin(labels, both)
    y, sc = labels[sel], scores[sel]
    # argmax: the first maximum, i.e. the lowest index among equals (as per_class_accuracy).
    s_arg, u_arg = s_idx[sc[:, s_idx].argmax(axis=1)], u_idx[sc[:, u_idx].argmax(axis=1)]
    rows = np.arange(len(y))
    gap = sc[rows, s_arg] - sc[rows, u_arg]  # seen wins while gamma < gap (at ==, the lower index)
    seen_first = s_arg < u_arg
    is_seen = np.isin(y, s_idx)
    weight = np.zeros(len(y))
    for part in (is_seen, ~is_seen):
        classes, inverse, counts = np.unique(y[part], return_inverse=True, return_counts=True)
        weight[part] = 1.0 / (counts[inverse] * len(classes))
    if gammas is None:
        points = np.unique(gap)
        grid = np.concatenate([[points[0] - 1.0], (points[:-1] + points[1:]) / 2, [points[-1] + 1.0]])
    else:
        grid = np.sort(np.asarray(gammas, dtype=np.float64).ravel())
        if grid.size == 0 or not np.all(np.isfinite(grid)):
            raise AttrtagError(f"gammas must be a non-empty list of finite numbers, got {gammas!r}")
    right_seen = is_seen & (y == s_arg)  # right whenever the seen side wins
    right_unseen = ~is_seen & (y == u_arg)  # right whenever the unseen side wins
    acc_s = _weight_where_seen_wins(gap[right_seen], seen_first[right_seen], weight[right_seen], grid)
    won_u = _weight_where_seen_wins(gap[right_unseen], seen_first[right_unseen], weight[right_unseen], grid)
    return SeenUnseenCurve(grid, acc_s, weight[right_unseen].sum() - won_u)


def _weight_where_seen_wins(gap: np.ndarray, seen_first: np.ndarray, weight: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """For each ``g`` of ``grid``: the summed weight of images with ``gap > g``, or ``gap == g``
    and the seen class first."""
    order = np.argsort(gap, kind="stable")
    g_sorted = gap[order]
    cum_w = np.concatenate([[0.0], np.cumsum(weight[order])])
    cum_tie = np.concatenate([[0.0], np.cumsum((weight * seen_first)[order])])
    lo, hi = np.searchsorted(g_sorted, grid, "left"), np.searchsorted(g_sorted, grid, "right")
    return (cum_w[-1] - cum_w[hi]) + (cum_tie[hi] - cum_tie[lo])


def ausuc(scores: np.ndarray, labels: np.ndarray, seen: Sequence[int], unseen: Sequence[int]) -> float:
    """Area under the seen-unseen accuracy curve over all calibration constants (Chao et al. 2016).

    Args:
        scores: ``(N, C)`` class scores.
        labels: ``(N,)`` true class indices (``-1`` skipped).
        seen: the seen classes.
        unseen: the unseen classes.

    Returns:
        The area, in ``[0, 1]``; a model that scores classes at random gets about
        ``1 / (2 * len(seen) * len(unseen))`` (its curve is the straight line from
        ``(0, 1/S)`` to ``(1/U, 0)``).
    """
    return seen_unseen_curve(scores, labels, seen, unseen).area


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
    if gammas is None:
        curve = seen_unseen_curve(scores, labels, seen, unseen)
        # 0 too: when it lies in the best interval, no intervention is the one to keep.
        curve = seen_unseen_curve(scores, labels, seen, unseen, gammas=np.append(curve.gammas, 0.0))
    else:
        curve = seen_unseen_curve(scores, labels, seen, unseen, gammas=gammas)
    g, h = curve.gammas, np.round(curve.harmonic, 12)  # round: sums of weights in another order
    best = np.lexsort((g, np.abs(g), -h))[0]  # highest H, then smallest |gamma|, then the smaller
    return float(g[best])


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
