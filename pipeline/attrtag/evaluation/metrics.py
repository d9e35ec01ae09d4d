"""Per-group classification metrics over the labelled images only (numpy, no torch).

Exclusive groups here; multi-label groups in :mod:`attrtag.evaluation.multilabel`. Both kinds
have a ``score`` (model selection: macro-F1, mAP) and sit in one list, in schema order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class GroupMetrics:
    """Accuracy and macro-F1 of one group, with the number of labelled images they are computed on.

    ``accuracy``/``macro_f1`` are ``None`` when the group has no labels: "no labels" is not 0%.
    """

    group: str
    labelled: int
    accuracy: float | None
    macro_f1: float | None
    confusion: np.ndarray  # (n_values, n_values): rows = true value, cols = predicted
    majority_baseline: float | None = None

    @property
    def score(self) -> float | None:
        """What model selection reads: macro-F1."""
        return self.macro_f1

    def to_dict(self, values: tuple[str, ...] | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {
            "group": self.group,
            "labelled": self.labelled,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "majority_baseline": self.majority_baseline,
            "confusion": self.confusion.tolist(),
        }
        if values is not None:
            d["values"] = list(values)
        return d


def group_metrics(group: str, y_true: np.ndarray, y_pred: np.ndarray, n_values: int) -> GroupMetrics:
    """Metrics of one group; entries with ``y_true == -1`` are ignored.

    Macro-F1 averages over the values that occur in the labels or the predictions (as
    scikit-learn does by default), so a value absent from both does not count as F1 = 0.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    keep = y_true >= 0
    t, p = y_true[keep], y_pred[keep]
    cm = np.zeros((n_values, n_values), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    n = int(keep.sum())
    if n == 0:
        return GroupMetrics(group, 0, None, None, cm, None)
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(1).astype(float), cm.sum(0).astype(float)
    present = (support + predicted) > 0
    f1 = np.divide(2 * tp, support + predicted, out=np.zeros_like(tp), where=(support + predicted) > 0)
    return GroupMetrics(
        group=group,
        labelled=n,
        accuracy=float(tp.sum() / n),
        macro_f1=float(f1[present].mean()),
        confusion=cm,
        majority_baseline=float(support.max() / n),
    )


def summary_score(metrics: Sequence[Any]) -> float:
    """Mean over the groups that have labels of their score (macro-F1; mAP for a multi-label
    group): the model-selection score; 0 if none."""
    vals = [m.score for m in metrics if m.score is not None]
    return float(np.mean(vals)) if vals else 0.0


def format_metrics(metrics: Sequence[Any]) -> str:
    """Text table: group, accuracy, macro-F1, labelled count, majority-class baseline; then a
    line per multi-label group (its ``describe()``)."""
    width = max([len(m.group) for m in metrics] + [5])
    lines = [f"  {'group':<{width}}  {'acc':>6}  {'macroF1':>7}  {'n':>6}  {'majority':>8}"]
    for m in metrics:
        if not isinstance(m, GroupMetrics):
            lines.append(m.describe())
        elif m.labelled == 0:
            lines.append(f"  {m.group:<{width}}  {'no labels':>6}")
        else:
            lines.append(f"  {m.group:<{width}}  {100 * m.accuracy:5.1f}%  {100 * m.macro_f1:6.1f}%  {m.labelled:>6}  "
                         f"{100 * m.majority_baseline:7.1f}%")
    return "\n".join(lines)
