"""Evaluation of any predictor on labelled samples: predictions, per-group metrics, zero-shot, report.

Predictions come from a :class:`~attrtag.runtime.Predictor` (a PyTorch model during training
and ``attrtag evaluate``, or an ONNX file) fed by the same decode pipeline tagging uses
(:mod:`attrtag.data.batches`), so validation numbers describe what users get.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .._files import write_text
from ..card import DEFAULT_THRESHOLD
from ..data.batches import decode_batches, stack_inputs
from ..data.manifest import SPLITS, Manifest, Sample
from ..errors import AttrtagError
from ..runtime.api import Predictor
from ..schema import Schema
from ..zeroshot.evaluation import ZeroShotReport, evaluate_splits, seen_and_unseen
from ..zeroshot.scoring import ClassScoring
from .metrics import GroupMetrics, group_metrics
from .multilabel import MultiLabelMetrics, multilabel_metrics
from .temperature import GroupCalibration, calibration_report, raw_and_calibrated

_logger = logging.getLogger(__name__)

#: ``progress(iterable, desc, total) -> iterable``, e.g. the CLI's tqdm wrapper.
Progress = Callable[[Iterable[Any], str, int], Iterable[Any]]


@dataclass
class Predictions:
    """Per-group probabilities ``[N, n_g]`` of the decodable samples, their targets and failures."""

    probs: dict[str, np.ndarray]
    targets: np.ndarray  # (N, W) target rows (Schema.multi_slices), -1 = no label
    samples: list[Sample]
    failed: list[tuple[str, str]] = field(default_factory=list)

    def take(self, wanted: Sequence[Sample]) -> "Predictions":
        """The predictions of ``wanted`` (those that decoded), in the order of these predictions."""
        ids = {id(s) for s in wanted}
        rows = [i for i, s in enumerate(self.samples) if id(s) in ids]
        paths = {s.path for s in wanted}
        return Predictions(
            probs={g: p[rows] for g, p in self.probs.items()},
            targets=self.targets[rows],
            samples=[self.samples[i] for i in rows],
            failed=[f for f in self.failed if f[0] in paths],
        )


def predict(
    predictor: Predictor,
    samples: Sequence[Sample],
    *,
    batch_size: int = 64,
    workers: int = 2,
    progress: Progress | None = None,
) -> Predictions:
    """Run ``predictor`` over ``samples`` with the model's evaluation preprocessing.

    Args:
        predictor: the model (any backend).
        samples: labelled images.
        batch_size: images per model call.
        workers: decoding threads (0: decode in this thread).
        progress: optional progress wrapper.

    Returns:
        The probabilities and targets of the samples that decoded, and the failures.
    """
    schema = predictor.schema
    by_path: dict[str, list[Sample]] = {}
    for s in samples:
        by_path.setdefault(s.path, []).append(s)
    batches: Iterable[Any] = decode_batches([s.path for s in samples], predictor.preprocessing,
                                            batch_size=batch_size, workers=workers)
    if progress is not None:
        batches = progress(batches, "eval", (len(samples) + batch_size - 1) // batch_size)
    probs: dict[str, list[np.ndarray]] = {n: [] for n in schema.names}
    kept: list[Sample] = []
    failed: list[tuple[str, str]] = []
    cursor = {p: 0 for p in by_path}
    for chunk in batches:
        ok = []
        for d in chunk:
            sample = by_path[d.path][cursor[d.path]]  # a path listed twice gives two samples
            cursor[d.path] += 1
            if d.pixels is None:
                failed.append((sample.path, d.message or d.error or "decode"))
            else:
                ok.append(d)
                kept.append(sample)
        if ok:
            out = predictor(stack_inputs(ok, predictor.preprocessing))
            for n in schema.names:
                probs[n].append(out[n])
    return Predictions(
        probs={n: np.concatenate(v) if v else np.zeros((0, len(schema[n])), np.float32) for n, v in probs.items()},
        targets=np.array([s.targets(schema) for s in kept], dtype=np.int64).reshape(len(kept), schema.target_width),
        samples=kept,
        failed=failed,
    )


def compute_metrics(schema: Schema, preds: Predictions,
                    thresholds: Mapping[str, Sequence[float]] | None = None) -> list[Any]:
    """Per-group metrics over the labelled images, in schema order: :class:`GroupMetrics` (argmax of
    each exclusive group's distribution) and :class:`MultiLabelMetrics` (each value decided at its
    threshold: ``thresholds[group]``, default :data:`attrtag.card.DEFAULT_THRESHOLD`)."""
    out: list[Any] = []
    for j, g in enumerate(schema.groups):
        p = preds.probs[g.name]
        if g.multi:
            t = (thresholds or {}).get(g.name) or (DEFAULT_THRESHOLD,) * len(g)
            out.append(multilabel_metrics(g, p, preds.targets[:, schema.multi_slices[g.name]], t))
            continue
        y_pred = p.argmax(1) if len(p) else np.zeros(0, np.int64)
        out.append(group_metrics(g.name, preds.targets[:, j], y_pred, len(g)))
    return out


def val_loss(schema: Schema, preds: Predictions) -> float | None:
    """Masked grouped loss of predictions: per exclusive group the mean NLL over its labelled images,
    per multi-label group the mean binary cross-entropy over its known values; summed. None
    without labels."""
    total, any_label = 0.0, False
    for j, g in enumerate(schema.groups):
        if g.multi:
            t = preds.targets[:, schema.multi_slices[g.name]]
            known = t >= 0
            if known.any():
                p = np.clip(preds.probs[g.name][known], 1e-12, 1 - 1e-12)
                total += float(-np.where(t[known] == 1, np.log(p), np.log1p(-p)).mean())
                any_label = True
            continue
        t = preds.targets[:, j]
        keep = t >= 0
        if keep.any():
            p = preds.probs[g.name][keep, t[keep]]
            total += float(-np.log(np.clip(p, 1e-12, 1.0)).mean())
            any_label = True
    return total if any_label else None


@dataclass
class Evaluation:
    """What :func:`evaluate` measured, and on which images (``split``, ``note``)."""

    metrics: list[GroupMetrics]
    predictions: Predictions
    split: str  # test, val, train or all
    zero_shot: ZeroShotReport | None = None
    note: str = ""  # which images these are, in words (printed and written into the report)
    includes_training: bool = False  # some scored images may have been trained on
    training: dict[str, Any] | None = None  # the learning options the model card records
    report: dict[str, Path] = field(default_factory=dict)  # what write_report wrote, when asked to
    zero_shot_note: str = ""  # which images and scoring the zero-shot figures come from, in words
    calibration: list[GroupCalibration] = field(default_factory=list)  # ECE raw / at the card's temperatures


def choose_split(manifest: Manifest, split: str | None) -> tuple[list[Sample], str, str, bool]:
    """The images to score: ``(samples, split, note, includes_training)``.

    ``split=None`` is the honest default: the test split when the manifest has one, else val.
    Training images are scored only when asked for (``train`` or ``all``), and the note says so.

    Raises:
        AttrtagError: an unknown or empty split, or no held-out rows for the default.
    """
    if split is not None and split not in (*SPLITS, "all"):
        raise AttrtagError(f"split '{split}' is not one of {', '.join(SPLITS)}, all (or None: test, else val)")
    if split is None:
        for name, note in (("test", "the held-out test split"),
                           ("val", "the val split (no test rows; training chose best.pt on it)")):
            if manifest.split(name):
                return manifest.split(name), name, note, False
        raise AttrtagError(
            f"{manifest.source}: no 'test' or 'val' rows (split column), so any row may have been trained on; "
            "pass `split=all` to score every row anyway (the report then says so)"
        )
    if split == "all":
        trained = len(manifest.split("train"))
        if manifest.has_splits:
            note = f"every row, {trained} of them from the train split the model was trained on"
        else:
            note = "every row; without a split column, training held out only a share of them (val_fraction)"
        return list(manifest.samples), "all", note, trained > 0 or not manifest.has_splits
    samples = manifest.split(split)
    if not samples:
        raise AttrtagError(f"{manifest.source}: no rows in split '{split}'")
    if split == "train":
        return samples, split, "the train split: the model was trained on these images, so the figures flatter it", True
    return samples, split, f"the {split} split", False


def class_names(samples: Sequence[Sample], column: str) -> list[str | None]:
    """Each sample's class from its ``column`` cell (None where empty)."""
    return [(s.extra.get(column) or "").strip() or None for s in samples]


def evaluate(
    predictor: Predictor,
    manifest: Manifest,
    *,
    split: str | None = None,
    classes: ClassScoring | None = None,
    class_column: str = "class",
    unseen: Sequence[str] | None = None,
    batch_size: int = 64,
    workers: int = 2,
    progress: Progress | None = None,
) -> Evaluation:
    """Per-group metrics on one split, and with ``classes`` the zero-shot figures.

    Figures use the probabilities at the card's temperatures (as tagging writes them);
    ``result.calibration`` has each group's ECE with them and with the raw probabilities.
    Zero-shot figures are computed on the test split with the calibration chosen on val
    (every row, uncalibrated, when the manifest has no split column), scored as tagging scores
    them (:func:`attrtag.zeroshot.scoring.class_scoring`: label priors, and the model's stored
    calibration as one more row when it holds).

    Args:
        predictor: the model.
        manifest: labelled samples.
        split: ``test``, ``val``, ``train`` or ``all`` (every row); None: the test split when the
            manifest has one, else val (:func:`choose_split`).
        classes: the class scoring; needs a ``class_column`` in the manifest.
        class_column: the manifest column holding each image's class.
        unseen: the unseen classes (default: the classes with no image in the train split).
        batch_size: images per model call.
        workers: decoding threads.
        progress: optional progress wrapper.

    Raises:
        AttrtagError: an empty split, or rules without what zero-shot evaluation needs.
    """
    samples, split, note, includes_training = choose_split(manifest, split)
    zs_samples: list[Sample] = []
    if classes is not None:
        zs_samples = _zero_shot_samples(manifest, class_column, unseen)
    elif unseen:
        raise AttrtagError("`unseen` needs `rules=R`")
    wanted = {id(s) for s in samples} | {id(s) for s in zs_samples}
    # One pass over every image either report needs.
    every = predict(predictor, [s for s in manifest.samples if id(s) in wanted], batch_size=batch_size,
                    workers=workers, progress=progress)
    card, (raw_every, every) = predictor.card, _raw_and_calibrated(predictor, every)
    preds, raw_preds = (every.take(samples), raw_every.take(samples)) if zs_samples else (every, raw_every)
    metrics = compute_metrics(card.schema, preds, card.decision_thresholds)
    result = Evaluation(metrics, preds, split, note=note, includes_training=includes_training,
                        training=None if card.training is None else dict(card.training),
                        calibration=calibration_report(card.schema, raw_preds.probs, preds.probs, preds.targets,
                                                       card.group_temperatures))
    if classes is not None:
        result.zero_shot = _zero_shot(every.take(zs_samples), manifest, classes, class_column, unseen)
        where = "test split, gamma chosen on val" if manifest.has_splits else "all rows, no calibration"
        result.zero_shot_note = where + ("; scores divided by the training label priors"
                                         if classes.label_counts is not None else "")
    return result


def _raw_and_calibrated(predictor: Predictor, preds: Predictions) -> tuple[Predictions, Predictions]:
    """``preds`` with the raw probabilities, and at the card's temperatures, whatever ``predictor`` applied."""
    card = predictor.card
    raw, calibrated = raw_and_calibrated(preds.probs, card.schema, predictor.temperatures, card.group_temperatures)
    return replace(preds, probs=raw), replace(preds, probs=calibrated)


def _zero_shot(zs: Predictions, manifest: Manifest, classes: ClassScoring, column: str,
               unseen: Sequence[str] | None) -> ZeroShotReport:
    """The zero-shot figures of the val and test images (every row without splits)."""
    train_classes = [c for c in class_names(manifest.split("train"), column) if c]
    seen, unseen_ = seen_and_unseen(classes.rules, train_classes, unseen)
    stored = classes.calibration
    splits = [s.split for s in zs.samples] if manifest.has_splits else [None] * len(zs.samples)
    return evaluate_splits(
        zs.probs, class_names(zs.samples, column), splits, classes.rules, classes.schema, seen=seen,
        unseen=unseen_, priors=classes.priors,
        stored_gamma=stored.gamma if stored is not None and set(stored.seen) == set(seen) else None,
    )


def report_extra(result: Evaluation, *, model: str, manifest: Manifest, rules: str | None,
                 class_column: str) -> dict[str, Any]:
    """What ``metrics.json`` holds besides the per-group figures: the model, the images, how they were chosen."""
    preds = result.predictions
    extra: dict[str, Any] = {
        "checkpoint": model,
        "manifest": manifest.source,
        "split": result.split,
        "split_note": result.note,
        "includes_training_images": result.includes_training,
        "images": len(preds.samples) + len(preds.failed),
        "training": result.training,
        "failed_images": [{"path": p, "reason": r} for p, r in preds.failed],
    }
    if result.zero_shot is not None:
        extra["zero_shot"] = {
            "rules": rules, "class_column": class_column,
            "split": "test" if manifest.has_splits else None,
            "calibration_split": "val" if manifest.has_splits else None,
            **result.zero_shot.to_dict(),
        }
    return extra


def check_class_column(manifest: Manifest, column: str, unseen: Sequence[str] | None) -> None:
    """Refuse a manifest that cannot tell zero-shot figures: no class column, or neither a split
    column (seen classes are those with train-split images) nor named unseen classes."""
    if not any(column in s.extra for s in manifest.samples):
        raise AttrtagError(
            f"{manifest.source}: no '{column}' column; zero-shot figures need each image's class "
            "(name the column with `class_column`)"
        )
    if not manifest.has_splits and not unseen:
        raise AttrtagError(
            f"{manifest.source}: no split column, so unseen classes cannot be told from training images; "
            "pass `unseen=A,B,...`"
        )


def _zero_shot_samples(manifest: Manifest, column: str, unseen: Sequence[str] | None) -> list[Sample]:
    """The images the zero-shot report needs: val and test (all rows without a split column)."""
    check_class_column(manifest, column, unseen)
    if not manifest.has_splits:
        return list(manifest.samples)
    if not manifest.split("test"):
        raise AttrtagError(f"{manifest.source}: no 'test' rows; the zero-shot report is computed on the test split")
    return manifest.split("val") + manifest.split("test")


def write_report(
    out_dir: str | Path, schema: Schema, metrics: list[Any], *, extra: dict[str, Any] | None = None,
    calibration: Sequence[GroupCalibration] = (),
) -> dict[str, Path]:
    """Write ``metrics.json`` and figures per labelled group into ``out_dir``: a confusion matrix
    of an exclusive group, per-value AP and F1 of a multi-label group, and with ``calibration``
    (:attr:`Evaluation.calibration`) a reliability diagram, raw and at the group's temperature.

    Returns:
        ``{"json": path, <group>: png_path, "reliability/<group>": png_path, ...}``; without
        matplotlib (the ``train`` extra) only the JSON, and a warning says so.
    """
    try:
        from .plots import plot_confusion, plot_reliability, plot_values  # matplotlib only when a report is written
        plots: Any = (plot_confusion, plot_values, plot_reliability)
    except ImportError:
        _logger.warning("figures not drawn: matplotlib is not installed (pip install 'attrtag[train]')")
        plots = None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    groups = []
    by_group = {c.group: c for c in calibration}
    for m in metrics:
        d = m.to_dict(schema[m.group].values)
        cal = by_group.get(m.group)
        d.update(cal.to_dict() if cal is not None else {})
        if m.labelled == 0:
            d["note"] = "no labels for this group in the evaluated images"
        elif plots is not None:
            written[m.group] = _figure(plots, m, schema, out_dir)
            d["figure_png" if isinstance(m, MultiLabelMetrics) else "confusion_png"] = written[m.group].name
            if cal is not None and cal.labelled:
                written[f"reliability/{m.group}"] = plots[2](cal, out_dir / f"reliability_{m.group}.png")
                d["reliability_png"] = written[f"reliability/{m.group}"].name
        groups.append(d)
    payload = {"groups": groups, **(extra or {})}
    path = out_dir / "metrics.json"
    write_text(path, json.dumps(payload, indent=2))
    written["json"] = path
    return written


def _figure(plots: Any, m: Any, schema: Schema, out_dir: Path) -> Path:
    plot_confusion, plot_values, _ = plots
    if isinstance(m, MultiLabelMetrics):
        v = m.values
        return plot_values([x.value for x in v], [x.ap for x in v], [x.f1 for x in v], [x.positives for x in v],
                                 out_dir / f"values_{m.group}.png", title=f"{m.group}  (n={m.labelled}, mAP="
                                 f"{'n/a' if m.mean_ap is None else f'{100 * m.mean_ap:.1f}%'})")
    return plot_confusion(m.confusion, schema[m.group].values, out_dir / f"confusion_{m.group}.png",
                                title=f"{m.group}  (n={m.labelled}, acc={100 * m.accuracy:.1f}%)")
