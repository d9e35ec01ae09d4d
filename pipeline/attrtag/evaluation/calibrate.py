"""Choosing the calibration that travels with a model (``attrtag calibrate``).

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

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..data.manifest import Manifest
from ..errors import AttrtagError
from ..runtime.api import Predictor
from ..zeroshot.calibration import Calibration, priors_from_counts, rules_digest
from ..zeroshot.evaluation import labelled_scores, seen_and_unseen
from ..zeroshot.metrics import GzslAccuracy, choose_gamma, evaluate_gzsl, seen_unseen_curve
from ..zeroshot.rules import Rules
from .evaluate import Progress, check_class_column, class_names, predict


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
    rules: Rules,
    *,
    class_column: str = "class",
    unseen: Sequence[str] | None = None,
    priors: bool = True,
    batch_size: int = 64,
    workers: int = 2,
    progress: Progress | None = None,
) -> CalibrationResult:
    """Choose the calibrated-stacking constant of ``predictor`` for ``rules`` on ``manifest``.

    Args:
        predictor: the model (either backend).
        manifest: labelled images with a class column.
        rules: the class rules, checked against the model's schema.
        class_column: the manifest column holding each image's class.
        unseen: the unseen classes (default: the classes of the rules without an image in the
            manifest's train split).
        priors: divide scores by the model's label priors when its card has label counts.
        batch_size: images per model call.
        workers: decoding threads.
        progress: optional progress wrapper.

    Returns:
        The calibration and the figures before and after it.

    Raises:
        AttrtagError: no class column, no seen or no unseen class, or a calibration split
            without images of both.
    """
    source = os.path.basename(manifest.source) or "manifest"
    check_class_column(manifest, class_column, unseen)
    train = [c for c in class_names(manifest.split("train"), class_column) if c]
    seen, unseen_ = seen_and_unseen(rules, train, unseen)
    if not seen:
        raise AttrtagError(f"{manifest.source}: no seen class (none of the rules' classes has train-split images "
                           "and is left out of --unseen), so there is nothing to calibrate against")
    if not unseen_:
        raise AttrtagError(f"{manifest.source}: no unseen class (every class of the rules has images in the train "
                           "split); name the unseen classes with --unseen A,B,...")
    splits = ("val", "test") if manifest.has_splits else (None,)
    rows = [(s, (s.extra.get(class_column) or "").strip()) for split in splits for s in manifest.split(split)]
    wanted = [s for s, c in rows if c in rules.names]  # only the images that can count
    skipped = Counter(c for _, c in rows if c and c not in rules.names)
    preds = predict(predictor, wanted, batch_size=batch_size, workers=workers, progress=progress)
    counts = predictor.card.label_counts if priors else None
    prior = None if counts is None else priors_from_counts(counts)
    s_idx, u_idx = [rules.index(c) for c in seen], [rules.index(c) for c in unseen_]

    scored = {}
    for split in splits:
        part = preds.take([s for s in preds.samples if s.split == split] if split else preds.samples)
        scored[split or "all"] = labelled_scores(part.probs, class_names(part.samples, class_column), rules,
                                                 predictor.schema, priors=prior)
    first = next(iter(scored))
    cal_scores = scored[first]
    for what, idx in (("seen", s_idx), ("unseen", u_idx)):
        if not np.isin(cal_scores.labels, idx).any():
            raise AttrtagError(f"{manifest.source}: the {first} split has no image of a {what} class of the rules; "
                               "calibration needs images of both")
    gamma = choose_gamma(cal_scores.scores, cal_scores.labels, s_idx, u_idx)
    figures = []
    for split, data in scored.items():
        y = data.labels
        n_s, n_u = int(np.isin(y, s_idx).sum()), int(np.isin(y, u_idx).sum())
        if not (n_s and n_u):
            continue
        figures.append(SplitFigures(
            split, n_s, n_u, evaluate_gzsl(data.scores, y, s_idx, u_idx),
            evaluate_gzsl(data.scores, y, s_idx, u_idx, gamma=gamma),
            seen_unseen_curve(data.scores, y, s_idx, u_idx).area,
        ))
    chosen = figures[0]
    info = {"chosen_on": f"{source}, split {first}, {chosen.seen_images + chosen.unseen_images} images",
            "unseen": list(unseen_), "figures": [f.to_dict() for f in figures]}
    calibration = Calibration(gamma, tuple(seen), counts is not None, rules_digest(rules), info=info)
    return CalibrationResult(calibration, rules, tuple(unseen_), tuple(figures), dict(skipped), list(preds.failed))
