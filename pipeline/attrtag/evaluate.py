"""Evaluation of a PyTorch attribute model on manifest records: predictions, metrics, report."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from .atomicfile import write_text
from .data import ImageDataset, make_loader
from .manifest import Record
from .metrics import GroupMetrics, group_metrics
from .preprocess import Preprocessing
from .schema import Schema

_logger = logging.getLogger(__name__)

Progress = Callable[[Iterable[Any], str, int], Iterable[Any]]


@dataclass
class Predictions:
    """Per-group probabilities ``[N, n_g]`` for the decodable records, their targets and failures."""

    probs: dict[str, np.ndarray]
    targets: np.ndarray  # (N, G), -1 = no label
    records: list[Record]
    failed: list[tuple[str, str]] = field(default_factory=list)


@torch.inference_mode()
def predict(
    model: nn.Module,
    records: Sequence[Record],
    prep: Preprocessing,
    *,
    device: torch.device,
    batch_size: int = 64,
    workers: int = 0,
    progress: Progress | None = None,
    amp: bool = False,
) -> Predictions:
    """Run ``model`` (returning ``{group: logits}``) over ``records`` with eval preprocessing."""
    schema: Schema = model.schema  # type: ignore[assignment]
    ds = ImageDataset(records, prep, train=False)
    loader = make_loader(ds, batch_size=batch_size, workers=workers, shuffle=False, pin_memory=device.type == "cuda")
    model.eval()
    probs: dict[str, list[np.ndarray]] = {n: [] for n in schema.names}
    targets, kept, failed = [], [], []
    it: Iterable[Any] = progress(loader, "eval", len(loader)) if progress else loader
    for batch in it:
        failed += [(records[i].path, reason) for i, reason in batch.failed]
        if batch.images.numel() == 0:
            continue
        x = batch.images.to(device, non_blocking=True)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
            logits = model(x)
        for n in schema.names:
            probs[n].append(torch.softmax(logits[n].float(), dim=1).cpu().numpy())
        targets.append(batch.targets.numpy())
        kept += [records[i] for i in batch.indices.tolist()]
    G = len(schema)
    return Predictions(
        probs={n: np.concatenate(v) if v else np.zeros((0, len(schema[n])), np.float32) for n, v in probs.items()},
        targets=np.concatenate(targets) if targets else np.zeros((0, G), np.int64),
        records=kept,
        failed=failed,
    )


def compute_metrics(schema: Schema, preds: Predictions) -> list[GroupMetrics]:
    """Per-group metrics over the labelled images (argmax of each group's distribution)."""
    out = []
    for j, g in enumerate(schema.groups):
        p = preds.probs[g.name]
        y_pred = p.argmax(1) if len(p) else np.zeros(0, np.int64)
        out.append(group_metrics(g.name, preds.targets[:, j], y_pred, len(g)))
    return out


def write_report(
    out_dir: str | Path, schema: Schema, metrics: list[GroupMetrics], *, extra: dict[str, Any] | None = None
) -> dict[str, Path]:
    """Write ``metrics.json`` and one confusion-matrix PNG per labelled group into ``out_dir``.

    Returns:
        ``{"json": path, <group>: png_path, ...}``.
    """
    from .plots import plot_confusion  # matplotlib only when a report is written

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    groups = []
    for m in metrics:
        values = schema[m.group].values
        d = m.to_dict(values)
        if m.labelled == 0:
            d["note"] = "no labels for this group in the evaluated images"
        else:
            png = out_dir / f"confusion_{m.group}.png"
            plot_confusion(m.confusion, values, png, title=f"{m.group}  (n={m.labelled}, acc={100 * m.accuracy:.1f}%)")
            d["confusion_png"] = png.name
            written[m.group] = png
        groups.append(d)
    payload = {"groups": groups, **(extra or {})}
    path = out_dir / "metrics.json"
    write_text(path, json.dumps(payload, indent=2))
    written["json"] = path
    return written
