"""Metrics and decision thresholds of multi-label groups, over the known (image, value) pairs only.

Per value: average precision (threshold-free, as scikit-learn computes it: precision at each
distinct score, weighted by the recall it adds), and precision, recall and F1 at the value's
decision threshold, with the counts behind them. Per group: mAP (the mean AP of the values that
have both positives and negatives), macro-F1 (mean of the values' F1), micro-F1 (F1 of the pooled
counts) and mean accuracy, mA, the mean over values of (positive recall + negative recall) / 2,
as pedestrian-attribute benchmarks (PETA, PA-100K) report it.

Thresholds (:func:`choose_thresholds`): each value's is the one that maximises its F1 on labelled
images; a value with fewer than :data:`MIN_POSITIVES` positives keeps the default and is listed.
Pure numpy.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..card import DEFAULT_THRESHOLD
from ..schema import Group, Schema

#: A value needs this many labelled positives (and one negative) to get a threshold of its own.
MIN_POSITIVES = 5


@dataclass(frozen=True)
class ValueMetrics:
    """One value of a multi-label group, over the images where it is known.

    ``ap`` is None without both positives and negatives; ``precision``/``recall``/``f1`` are
    None where their denominators are 0.
    """

    value: str
    positives: int
    negatives: int
    threshold: float
    tp: int
    fp: int
    fn: int
    ap: float | None
    precision: float | None
    recall: float | None
    f1: float | None

    @property
    def tn(self) -> int:
        return self.negatives - self.fp


@dataclass(frozen=True)
class MultiLabelMetrics:
    """The figures of one multi-label group (``None`` where nothing is labelled)."""

    group: str
    labelled: int  # images with at least one known value
    values: tuple[ValueMetrics, ...]
    mean_ap: float | None
    macro_f1: float | None
    micro_f1: float | None
    mean_accuracy: float | None

    @property
    def score(self) -> float | None:
        """What model selection reads (threshold-free): mAP."""
        return self.mean_ap

    def describe(self) -> str:
        """One line: the group's figures and how many images they stand on."""
        def pct(x: float | None) -> str:
            return "  n/a" if x is None else f"{100 * x:5.1f}%"

        return (f"  {self.group}: mAP {pct(self.mean_ap)}  macro-F1 {pct(self.macro_f1)}  micro-F1 "
                f"{pct(self.micro_f1)}  mA {pct(self.mean_accuracy)}  ({self.labelled} images, "
                f"{len(self.values)} values; multi-label)")

    def to_dict(self, values: tuple[str, ...] | None = None) -> dict[str, Any]:
        return {"group": self.group, "kind": "multi", "labelled": self.labelled, "mAP": self.mean_ap,
                "macro_f1": self.macro_f1, "micro_f1": self.micro_f1, "mean_accuracy": self.mean_accuracy,
                "values": [asdict(v) for v in self.values]}


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """AP of one value: sum over distinct scores, best first, of precision times the recall added."""
    n_pos = int(positive.sum())
    if n_pos == 0 or n_pos == len(positive):
        return None
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], positive[order].astype(np.float64)
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last index of each distinct score
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def value_metrics(value: str, scores: np.ndarray, labels: np.ndarray, threshold: float) -> ValueMetrics:
    """The metrics of one value from its scores and labels (1/0/-1; unknown ones ignored)."""
    known = labels >= 0
    s, y = scores[known], labels[known] == 1
    pred = s >= threshold
    tp, fp, fn = int((pred & y).sum()), int((pred & ~y).sum()), int((~pred & y).sum())
    return ValueMetrics(
        value, int(y.sum()), int((~y).sum()), float(threshold), tp, fp, fn, average_precision(s, y),
        _ratio(tp, tp + fp), _ratio(tp, tp + fn), _ratio(2 * tp, 2 * tp + fp + fn),
    )


def multilabel_metrics(group: Group, probs: np.ndarray, labels: np.ndarray,
                       thresholds: Sequence[float]) -> MultiLabelMetrics:
    """The metrics of a multi-label group: ``probs`` and ``labels`` are ``(N, n_values)``."""
    values = tuple(value_metrics(v, probs[:, i], labels[:, i], thresholds[i]) for i, v in enumerate(group.values))
    labelled = int((labels >= 0).any(axis=1).sum())
    known = [v for v in values if v.positives + v.negatives]
    aps = [v.ap for v in values if v.ap is not None]
    f1s = [v.f1 for v in known if v.f1 is not None]
    both = [v for v in values if v.positives and v.negatives]
    tp, fp, fn = (sum(getattr(v, k) for v in values) for k in ("tp", "fp", "fn"))
    return MultiLabelMetrics(
        group.name, labelled, values,
        mean_ap=_mean(aps), macro_f1=_mean(f1s), micro_f1=_ratio(2 * tp, 2 * tp + fp + fn) if known else None,
        mean_accuracy=_mean([(v.tp / v.positives + v.tn / v.negatives) / 2 for v in both]),
    )


def best_f1_threshold(scores: np.ndarray, positive: np.ndarray) -> float:
    """The threshold that maximises F1 on these scores: halfway below the best cut's lowest score."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], positive[order].astype(np.float64)
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(y)[last]
    f1 = 2 * tp / (last + 1 + y.sum())  # 2tp / (predicted + actual positives)
    k = int(np.argmax(f1))  # the first best: the highest threshold reaching it
    below = s[last[k] + 1] if last[k] + 1 < len(s) else 0.0
    return float((s[last[k]] + below) / 2)


def choose_thresholds(schema: Schema, probs: Mapping[str, np.ndarray], targets: np.ndarray, *,
                      default: float = DEFAULT_THRESHOLD, chosen_on: str = "") -> dict[str, Any]:
    """Each multi-label value's best-F1 threshold on labelled images, as a card's ``value_thresholds``.

    Args:
        schema: the model's schema.
        probs: group -> ``(N, n)`` probabilities.
        targets: ``(N, W)`` target rows (:attr:`attrtag.schema.Schema.multi_slices`).
        default: the threshold of a value with too few positives (listed under ``fallback``).
        chosen_on: where the thresholds were chosen, in words.
    """
    groups: dict[str, dict[str, float]] = {}
    fallback: dict[str, list[str]] = {}
    for g in schema.multi:
        labels = targets[:, schema.multi_slices[g.name]]
        for i, v in enumerate(g.values):
            known = labels[:, i] >= 0
            y = labels[known, i] == 1
            if y.sum() < MIN_POSITIVES or y.all():
                fallback.setdefault(g.name, []).append(v)
                continue
            groups.setdefault(g.name, {})[v] = round(best_f1_threshold(probs[g.name][known, i], y), 6)
    return {"groups": groups, "default": default, "fallback": fallback, "min_positives": MIN_POSITIVES,
            "chosen_on": chosen_on}


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def _mean(xs: Sequence[float]) -> float | None:
    return float(np.mean(xs)) if len(xs) else None
