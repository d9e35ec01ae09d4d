"""Figures written next to runs and reports (matplotlib, headless Agg backend)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .._files import atomic_path  # noqa: E402


def _save(fig: Any, path: Path) -> None:
    # Atomic: a viewer never sees a half-written PNG.
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)


def plot_confusion(cm: np.ndarray, values: Sequence[str], path: str | Path, *, title: str = "") -> Path:
    """Row-normalised confusion matrix with raw counts in the cells."""
    path = Path(path)
    n = len(values)
    size = max(3.5, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm, dtype=float), where=rows > 0)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), values, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), values, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title, fontsize=9)
    _save(fig, path)
    return path


def plot_history(history: Sequence[dict[str, Any]], groups: Sequence[str], path: str | Path) -> Path:
    """Training curves: train/val loss, and each group's validation accuracy per epoch."""
    path = Path(path)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [h["epoch"] for h in history]
    ax1.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train loss")
    if any(h.get("val_loss") is not None for h in history):
        ax1.plot(epochs, [h.get("val_loss") for h in history], marker="o", label="val loss")
    ax1.set_xlabel("epoch")
    ax1.set_title("loss")
    ax1.legend()
    for g in groups:
        acc = [h.get(f"val_acc/{g}") for h in history]
        if any(a is not None for a in acc):
            ax2.plot(epochs, [np.nan if a is None else 100 * a for a in acc], marker=".", label=g)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("%")
    ax2.set_title("validation accuracy per group")
    if ax2.lines:
        ax2.legend(fontsize=7)
    else:  # no val images: say so in the figure, not with matplotlib's "No artists with labels" warning
        ax2.text(0.5, 0.5, "no val images", ha="center", va="center", transform=ax2.transAxes)
    _save(fig, path)
    return path


def plot_values(names: Sequence[str], ap: Sequence[float | None], f1: Sequence[float | None],
                positives: Sequence[int], path: str | Path, *, title: str = "") -> Path:
    """A multi-label group's values side by side: average precision and F1 at the value's threshold,
    with the labelled positives behind each (a value without both positives and negatives: no bar)."""
    path = Path(path)
    n = len(names)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * n + 2), 3.5))
    x = np.arange(n)
    ax.bar(x - 0.2, [a if a is not None else 0 for a in ap], 0.4, label="average precision")
    ax.bar(x + 0.2, [f if f is not None else 0 for f in f1], 0.4, label="F1 at threshold")
    ax.set_xticks(x, [f"{v}\n(n+={p})" for v, p in zip(names, positives)], rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    _save(fig, path)
    return path


def plot_reliability(cal: Any, path: str | Path) -> Path:
    """A group's reliability diagram (:class:`~attrtag.evaluation.temperature.GroupCalibration`):
    per confidence bin, accuracy against mean confidence, raw and at the group's temperature,
    over the diagonal a calibrated model follows; the bars behind show how many images each bin holds."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    edges = cal.raw.edges
    counts = ax.twinx()  # bin sizes behind the curves, so an empty or tiny bin is seen for what it is
    width = (edges[1] - edges[0]) * 0.4
    counts.bar(edges[:-1] + width, cal.raw.counts, width, color="0.85", label="images (raw)")
    counts.bar(edges[:-1] + 2 * width, cal.calibrated.counts, width, color="0.7", label="images (calibrated)")
    counts.set_ylabel("images per bin", fontsize=8)
    counts.legend(fontsize=7, loc="lower right")
    ax.set_zorder(counts.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.plot([0, 1], [0, 1], ls="--", color="0.4", lw=1)
    for rel, name, style in ((cal.raw, "raw", "o-"), (cal.calibrated, f"T = {cal.temperature:.3g}", "s-")):
        seen = rel.counts > 0
        ece = "n/a" if rel.ece is None else f"{rel.ece:.3f}"
        ax.plot(rel.confidence[seen], rel.accuracy[seen], style, ms=4, label=f"{name} (ECE {ece})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (mean per bin)")
    ax.set_ylabel("accuracy (multi-label: share present)")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(f"{cal.group}  (n={cal.labelled}, {len(edges) - 1} bins)", fontsize=9)
    _save(fig, path)
    return path
