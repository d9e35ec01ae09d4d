"""What int8 costs: a float32 and an int8 model run on the same labelled images, group by group.

An exclusive group is compared by accuracy (argmax against the label); a multi-label group by
mAP (threshold-free) and micro-F1 at the card's decision thresholds, over the known (image, value)
pairs only (:mod:`attrtag.evaluation.multilabel`). Torch-free: both models run in ONNX Runtime.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from attrtag.card import ModelCard
from attrtag.data.batches import decode_batches, stack_inputs
from attrtag.data.manifest import Sample
from attrtag.data.preprocess import Preprocessing
from attrtag.errors import AttrtagError
from attrtag.evaluation.metrics import group_metrics
from attrtag.evaluation.multilabel import MultiLabelMetrics, multilabel_metrics
from attrtag.runtime.onnx_backend import OnnxModel
from attrtag.schema import Schema

_logger = logging.getLogger(__name__)

#: ``progress(iterable, desc, total) -> iterable``, e.g. the CLI's tqdm wrapper.
Progress = Callable[[Iterable[Any], str, "int | None"], Iterable[Any]]


@dataclass(frozen=True)
class GroupAccuracy:
    """Accuracy of one exclusive group on the labelled images of the manifest, float32 vs int8.

    ``fp32``/``int8`` are fractions in [0, 1], ``None`` when the group has no labels there.
    """

    group: str
    labelled: int
    fp32: float | None
    int8: float | None

    @property
    def delta_points(self) -> float | None:
        """int8 minus float32 accuracy, in percentage points (negative = int8 is worse)."""
        return _points(self.fp32, self.int8)


@dataclass(frozen=True)
class MultiLabelAccuracy:
    """One multi-label group's figures on the known (image, value) pairs, float32 vs int8.

    ``fp32_metrics``/``int8_metrics`` hold every figure, per value too; the table shows mAP and
    micro-F1 at the card's decision thresholds (``None`` without labels).
    """

    group: str
    fp32_metrics: MultiLabelMetrics
    int8_metrics: MultiLabelMetrics
    fp32_map: float | None = field(init=False)
    int8_map: float | None = field(init=False)
    fp32_f1: float | None = field(init=False)
    int8_f1: float | None = field(init=False)

    def __post_init__(self) -> None:
        for model, metrics in (("fp32", self.fp32_metrics), ("int8", self.int8_metrics)):
            object.__setattr__(self, f"{model}_map", metrics.mean_ap)
            object.__setattr__(self, f"{model}_f1", metrics.micro_f1)

    @property
    def labelled(self) -> int:
        """Images with at least one known value of the group."""
        return self.fp32_metrics.labelled

    @property
    def delta_map_points(self) -> float | None:
        """int8 minus float32 mAP, in percentage points."""
        return _points(self.fp32_map, self.int8_map)

    @property
    def delta_f1_points(self) -> float | None:
        """int8 minus float32 micro-F1, in percentage points."""
        return _points(self.fp32_f1, self.int8_f1)


@dataclass(frozen=True)
class Comparison:
    """What :func:`compare_models` measured."""

    groups: list[GroupAccuracy]  # the exclusive groups, schema order
    multi_label: list[MultiLabelAccuracy]  # the multi-label groups, schema order
    max_abs_diff: dict[str, float]  # every group: max |int8 - fp32| of a probability
    images: int  # images both models ran on


def labelled_batches(
    records: Sequence[Sample], prep: Preprocessing, batch_size: int, failed: list[str]
) -> Iterator[tuple[np.ndarray, list[Sample]]]:
    """Decoded, preprocessed ``[B, 3, H, W]`` batches; undecodable images go to ``failed``."""
    by_path = {r.path: r for r in records}
    for chunk in decode_batches([r.path for r in records], prep, batch_size=batch_size, workers=2):
        for d in chunk:
            if d.pixels is None:
                _logger.warning("skipping %s", d.message)
                failed.append(d.path)
        kept = [by_path[d.path] for d in chunk if d.pixels is not None]
        if kept:
            yield stack_inputs(chunk, prep), kept


def compare_models(
    fp32_path: Path, int8_path: Path, card: ModelCard, records: Sequence[Sample], *, batch_size: int,
    failed: list[str], progress: Progress | None = None,
) -> Comparison:
    """Run both models on the CPU over ``records`` (one decode each) and compare them.

    Raises:
        AttrtagError: no image of ``records`` could be decoded.
    """
    fp32, int8 = OnnxModel(fp32_path, device="cpu"), OnnxModel(int8_path, device="cpu")
    names = card.schema.names
    parts: dict[str, list[np.ndarray]] = {f"{n}/{p}": [] for n in names for p in ("fp32", "int8")}
    diffs = dict.fromkeys(names, 0.0)
    done: list[Sample] = []
    batches: Iterable[Any] = labelled_batches(records, card.preprocessing, batch_size, failed)
    if progress is not None:
        batches = progress(batches, "comparing fp32 vs int8", (len(records) + batch_size - 1) // batch_size)
    for batch, kept in batches:
        out32, out8 = fp32(batch), int8(batch)
        for name in names:
            diffs[name] = max(diffs[name], float(np.max(np.abs(out32[name] - out8[name]))))
            parts[f"{name}/fp32"].append(out32[name])
            parts[f"{name}/int8"].append(out8[name])
        done.extend(kept)
    if not done:
        raise AttrtagError("no image of the manifest could be decoded for the accuracy comparison")
    probs = {k: np.concatenate(v) for k, v in parts.items()}
    targets = np.array([r.targets(card.schema) for r in done], dtype=np.int64)  # (N, target width)
    return Comparison(_exclusive(card.schema, probs, targets), _multi_label(card, probs, targets), diffs, len(done))


def _exclusive(schema: Schema, probs: Mapping[str, np.ndarray], targets: np.ndarray) -> list[GroupAccuracy]:
    out = []
    for j, g in enumerate(schema):
        if g.multi:
            continue
        m32 = group_metrics(g.name, targets[:, j], probs[f"{g.name}/fp32"].argmax(1), len(g))
        m8 = group_metrics(g.name, targets[:, j], probs[f"{g.name}/int8"].argmax(1), len(g))
        out.append(GroupAccuracy(group=g.name, labelled=m32.labelled, fp32=m32.accuracy, int8=m8.accuracy))
    return out


def _multi_label(card: ModelCard, probs: Mapping[str, np.ndarray], targets: np.ndarray) -> list[MultiLabelAccuracy]:
    """Each multi-label group decided at the card's thresholds, the ones a tag run uses by default."""
    thresholds = card.decision_thresholds
    out = []
    for g in card.schema.multi:
        labels = targets[:, card.schema.multi_slices[g.name]]
        m32, m8 = (multilabel_metrics(g, probs[f"{g.name}/{p}"], labels, thresholds[g.name]) for p in ("fp32", "int8"))
        out.append(MultiLabelAccuracy(g.name, m32, m8))
    return out


def _points(fp32: float | None, int8: float | None) -> float | None:
    """``int8 - fp32`` in percentage points, None when either is missing."""
    if fp32 is None or int8 is None:
        return None
    return 100.0 * (int8 - fp32)
