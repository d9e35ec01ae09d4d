"""Evaluation: per-group metrics (numpy), predictions from any predictor, reports and figures."""
from .evaluate import Evaluation, Predictions, compute_metrics, evaluate, predict, val_loss, write_report
from .metrics import GroupMetrics, format_metrics, group_metrics, summary_score

__all__ = [
    "Evaluation", "GroupMetrics", "Predictions", "compute_metrics", "evaluate", "format_metrics", "group_metrics",
    "predict", "summary_score", "val_loss", "write_report",
]
