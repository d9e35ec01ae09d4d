"""Choosing the calibration that travels with a model (``attrtag calibrate``): the zero-shot
constant, the multi-label values' decision thresholds (:func:`refit_thresholds`), or each
group's temperature (:func:`refit_temperatures`).

The images of a labelled manifest with a class column are run through the model (the same
decode pipeline tagging uses) and scored against the rules, divided by the model's label priors
unless told otherwise, exactly as ``attrtag tag`` will score them. The calibrated-stacking
constant is chosen on the calibration split (``val`` when the manifest has splits, every row
otherwise) to maximise the GZSL harmonic mean (:func:`attrtag.zeroshot.metrics.choose_gamma`);
seen/unseen/H before and after, and AUSUC, are reported on that split and, when the manifest
has one, on the test split, which played no part in the choice. Writing the result into a model
file is the caller's job (:func:`attrtag.api.calibrate`).
"""
from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..data.manifest import Manifest
from ..errors import AttrtagError
from ..runtime.api import Predictor
from ..runtime.temperature import apply_temperatures
from ..zeroshot.calibration import Calibration, rules_digest
from ..zeroshot.evaluation import LabelledScores, labelled_scores, seen_and_unseen
from ..zeroshot.metrics import GzslAccuracy, choose_gamma, evaluate_gzsl, seen_unseen_curve
from ..zeroshot.rules import Rules
from ..zeroshot.scoring import ClassScoring
from .evaluate import Predictions, Progress, check_class_column, class_names, predict
from .multilabel import MultiLabelMetrics, choose_thresholds, multilabel_metrics
from .temperature import GroupCalibration, calibration_report, fit_temperatures, raw_and_calibrated


@dataclass(frozen=True)
class SplitFigures:
    """GZSL on one split, before and after calibration.

    Attributes:
        split: ``val``, ``test`` or ``all`` (a manifest without splits).
        seen_images: images of seen classes evaluated.
        unseen_images: images of unseen classes evaluated.
        before: accuracy without calibration (``gamma`` 0).
        after: accuracy with the chosen ``gamma``.
        ausuc: area under the seen-unseen curve (does not depend on ``gamma``).
    """

    split: str
    seen_images: int
    unseen_images: int
    before: GzslAccuracy
    after: GzslAccuracy
    ausuc: float

    def to_dict(self) -> dict[str, Any]:
        def acc(g: GzslAccuracy) -> dict[str, float]:
            return {"seen": g.seen, "unseen": g.unseen, "harmonic": g.harmonic}

        return {"split": self.split, "seen_images": self.seen_images, "unseen_images": self.unseen_images,
                "before": acc(self.before), "after": acc(self.after), "ausuc": self.ausuc}


@dataclass(frozen=True)
class CalibrationResult:
    """What :func:`choose_calibration` found.

    Attributes:
        calibration: the constant and what it holds for (rules digest, seen classes, priors).
        rules: the rules it was chosen for (to store with it).
        unseen: the unseen classes.
        figures: the calibration split first, then the test split when there is one.
        skipped: class name -> images left out because the rules have no such class.
        failed: ``(path, reason)`` of images that could not be decoded.
    """

    calibration: Calibration
    rules: Rules
    unseen: tuple[str, ...]
    figures: tuple[SplitFigures, ...]
    skipped: Mapping[str, int] = field(default_factory=dict)
    failed: Sequence[tuple[str, str]] = ()


def choose_calibration(
    predictor: Predictor,
    manifest: Manifest,
    classes: ClassScoring,
    *,
    class_column: str = "class",
    unseen: Sequence[str] | None = None,
    batch_size: int = 64,
    workers: int = 2,
    progress: Progress | None = None,
) -> CalibrationResult:
    """Choose the calibrated-stacking constant of ``predictor`` for ``classes`` on ``manifest``.

    Args:
        predictor: the model (either backend).
        manifest: labelled images with a class column.
        classes: the rules and priors to score with (:func:`attrtag.zeroshot.scoring.class_scoring`).
        class_column: the manifest column holding each image's class.
        unseen: the unseen classes (default: the classes of the rules without an image in the
            manifest's train split).
        batch_size: images per model call.
        workers: decoding threads.
        progress: optional progress wrapper.

    Raises:
        AttrtagError: no class column, no seen or no unseen class, or a calibration split
            without images of both.
    """
    rules = classes.rules
    seen, unseen_ = _seen_and_unseen(manifest, rules, class_column, unseen)
    splits = ("val", "test") if manifest.has_splits else (None,)
    rows = [(s, (s.extra.get(class_column) or "").strip()) for split in splits for s in manifest.split(split)]
    wanted = [s for s, c in rows if c in rules.names]  # only the images that can count
    skipped = Counter(c for _, c in rows if c and c not in rules.names)
    preds = predict(predictor, wanted, batch_size=batch_size, workers=workers, progress=progress)
    scored = {split or "all": _scores(preds, split, class_column, classes) for split in splits}
    s_idx, u_idx = [rules.index(c) for c in seen], [rules.index(c) for c in unseen_]
    first = next(iter(scored))
    for what, idx in (("seen", s_idx), ("unseen", u_idx)):
        if not np.isin(scored[first].labels, idx).any():
            raise AttrtagError(f"{manifest.source}: the {first} split has no image of a {what} class of the rules; "
                               "calibration needs images of both")
    gamma = choose_gamma(scored[first].scores, scored[first].labels, s_idx, u_idx)
    figures = [f for f in (_figures(split, data, s_idx, u_idx, gamma) for split, data in scored.items()) if f]
    chosen, source = figures[0], os.path.basename(manifest.source) or "manifest"
    info = {"chosen_on": f"{source}, split {first}, {chosen.seen_images + chosen.unseen_images} images",
            "unseen": list(unseen_), "figures": [f.to_dict() for f in figures]}
    calibration = Calibration(gamma, tuple(seen), classes.label_counts is not None, rules_digest(rules), info=info)
    return CalibrationResult(calibration, rules, tuple(unseen_), tuple(figures), dict(skipped), list(preds.failed))


def _seen_and_unseen(manifest: Manifest, rules: Rules, column: str,
                     unseen: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """The seen classes (train-split images) and the unseen ones, both needed to calibrate."""
    check_class_column(manifest, column, unseen)
    train = [c for c in class_names(manifest.split("train"), column) if c]
    seen, unseen_ = seen_and_unseen(rules, train, unseen)
    if not seen:
        raise AttrtagError(f"{manifest.source}: no seen class (none of the rules' classes has train-split images "
                           "and is left out of `unseen`), so there is nothing to calibrate against")
    if not unseen_:
        raise AttrtagError(f"{manifest.source}: no unseen class (every class of the rules has images in the train "
                           "split); name the unseen classes with `unseen=A,B,...`")
    return seen, unseen_


def _scores(preds: Predictions, split: str | None, column: str, classes: ClassScoring) -> LabelledScores:
    """Class scores and labels of one split's images (every image when ``split`` is None)."""
    part = preds.take([s for s in preds.samples if s.split == split] if split else preds.samples)
    return labelled_scores(part.probs, class_names(part.samples, column), classes.rules, classes.schema,
                           priors=classes.priors)


def _figures(split: str, data: LabelledScores, s_idx: list[int], u_idx: list[int], gamma: float) -> SplitFigures | None:
    """Seen/unseen/H before and after ``gamma`` on one split (None without images of both)."""
    y = data.labels
    n_s, n_u = int(np.isin(y, s_idx).sum()), int(np.isin(y, u_idx).sum())
    if not (n_s and n_u):
        return None
    return SplitFigures(split, n_s, n_u, evaluate_gzsl(data.scores, y, s_idx, u_idx),
                        evaluate_gzsl(data.scores, y, s_idx, u_idx, gamma=gamma),
                        seen_unseen_curve(data.scores, y, s_idx, u_idx).area)


@dataclass(frozen=True)
class ThresholdRefit:
    """What :func:`refit_thresholds` chose, and each multi-label group's figures before and after.

    Attributes:
        value_thresholds: the card entry (``{"groups": {group: {value: t}}, "fallback": ...}``).
        before: per group, the metrics at the thresholds the model had.
        after: per group, the metrics at the new thresholds (on the same images).
        split: the images they were chosen on (``val``, or ``all`` without a split column).
        failed: ``(path, reason)`` of images that could not be decoded.
    """

    value_thresholds: Mapping[str, Any]
    before: tuple[MultiLabelMetrics, ...]
    after: tuple[MultiLabelMetrics, ...]
    split: str
    failed: Sequence[tuple[str, str]] = ()


def refit_thresholds(predictor: Predictor, manifest: Manifest, *, batch_size: int = 64, workers: int = 2,
                     progress: Progress | None = None) -> ThresholdRefit:
    """Choose every multi-label value's threshold again on ``manifest``'s val split (every row without splits).

    Raises:
        AttrtagError: the model has no multi-label group, or the split has no images.
    """
    schema = predictor.schema
    if not schema.multi:
        raise AttrtagError("`value_thresholds=True`: the model has no multi-label group, so it has no value thresholds")
    split = "val" if manifest.has_splits else None
    samples = manifest.split(split)
    if not samples:
        raise AttrtagError(f"{manifest.source}: no 'val' rows to choose the thresholds on")
    preds = predict(predictor, samples, batch_size=batch_size, workers=workers, progress=progress)
    where = f"{os.path.basename(manifest.source)}, split {split or 'all'}, {len(preds.samples)} images"
    chosen = choose_thresholds(schema, preds.probs, preds.targets, chosen_on=where)
    new = predictor.card.replace(value_thresholds=chosen).decision_thresholds

    def figures(thresholds: Mapping[str, Sequence[float]]) -> tuple[MultiLabelMetrics, ...]:
        return tuple(multilabel_metrics(g, preds.probs[g.name], preds.targets[:, schema.multi_slices[g.name]],
                                        thresholds[g.name]) for g in schema.multi)

    return ThresholdRefit(chosen, figures(predictor.card.decision_thresholds), figures(new), split or "all",
                          list(preds.failed))


@dataclass(frozen=True)
class TemperatureRefit:
    """What :func:`refit_temperatures` fitted, and each group's calibration before and after.

    Attributes:
        temperatures: the card entry (``{"groups": {group: T}, "fitted_on": ...}``).
        value_thresholds: the model's multi-label thresholds mapped to the new temperatures (the
            same decisions), or None when it has none.
        before: per group, the ECE raw and at the temperatures the model had.
        after: per group, the ECE raw and at the new temperatures (on the same images).
        split: the images they were fitted on (``val``, or ``all`` without a split column).
        failed: ``(path, reason)`` of images that could not be decoded.
    """

    temperatures: Mapping[str, Any]
    value_thresholds: Mapping[str, Any] | None
    before: tuple[GroupCalibration, ...]
    after: tuple[GroupCalibration, ...]
    split: str
    failed: Sequence[tuple[str, str]] = ()


def refit_temperatures(predictor: Predictor, manifest: Manifest, *, batch_size: int = 64, workers: int = 2,
                       progress: Progress | None = None) -> TemperatureRefit:
    """Fit every group's temperature again on ``manifest``'s val split (every row without splits).

    The model's multi-label thresholds apply to calibrated probabilities; they are mapped to the
    new temperatures (:func:`map_thresholds`) so that every value is decided as before.

    Raises:
        AttrtagError: the split has no images, or no labelled image in any group.
    """
    schema, card = predictor.schema, predictor.card
    split = "val" if manifest.has_splits else None
    samples = manifest.split(split)
    if not samples:
        raise AttrtagError(f"{manifest.source}: no 'val' rows to fit the temperatures on")
    preds = predict(predictor, samples, batch_size=batch_size, workers=workers, progress=progress)
    raw, _ = raw_and_calibrated(preds.probs, schema, predictor.temperatures, {})
    where = f"{os.path.basename(manifest.source)}, split {split or 'all'}, {len(preds.samples)} images"
    fitted = fit_temperatures(schema, raw, preds.targets, fitted_on=where)
    if not fitted["groups"]:
        raise AttrtagError(f"{manifest.source}: no labelled image in the {split or 'manifest'} rows to fit a "
                           "temperature on")
    old, new = card.group_temperatures, {g: float(t) for g, t in fitted["groups"].items()}
    thresholds = None if card.value_thresholds is None else map_thresholds(card.value_thresholds, old, new)

    def figures(temperatures: Mapping[str, float]) -> tuple[GroupCalibration, ...]:
        calibrated = apply_temperatures(raw, schema, temperatures)
        return tuple(calibration_report(schema, raw, calibrated, preds.targets, temperatures))

    return TemperatureRefit(fitted, thresholds, figures(old), figures(new), split or "all", list(preds.failed))


def map_thresholds(value_thresholds: Mapping[str, Any], old: Mapping[str, float],
                   new: Mapping[str, float]) -> dict[str, Any]:
    """Multi-label thresholds chosen at temperatures ``old`` moved to temperatures ``new``.

    A value is present when ``sigmoid(z / T) >= t``, i.e. ``z >= T logit(t)``; the sigmoid is
    monotone, so ``t' = sigmoid(logit(t) T_old / T_new)`` decides every value as ``t`` did.
    """
    groups = {}
    for group, per_value in value_thresholds.get("groups", {}).items():
        ratio = old.get(group, 1.0) / new.get(group, 1.0)
        groups[group] = {v: t if not 0.0 < t < 1.0 else 1.0 / (1.0 + math.exp(-math.log(t / (1.0 - t)) * ratio))
                         for v, t in per_value.items()}
    return {**value_thresholds, "groups": groups}
