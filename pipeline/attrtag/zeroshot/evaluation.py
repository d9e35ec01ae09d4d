"""Zero-shot evaluation of an attribute model: rules + predicted distributions + true classes.

The glue between per-group probabilities of labelled images (``attrtag evaluate``, the
benchmarks) and the metrics of :mod:`attrtag.zeroshot.metrics`:

* **Seen and unseen classes.** A class of the rules is *seen* when the training split has
  images of it, *unseen* otherwise (or as the user says). Images whose class is not in the
  rules, or empty, are left out and counted.
* **ZSL**: images of unseen classes, only unseen classes as candidates; per-class averaged
  top-1 and top-5 accuracy (chance: 1/U and min(5, U)/U for U unseen classes with images).
* **GZSL**: seen and unseen images, every class a candidate; per-class accuracy on seen, on
  unseen, harmonic mean H. Once without calibration, once with calibrated stacking (a constant
  ``gamma`` subtracted from seen-class scores) whose ``gamma`` is chosen on the validation
  images to maximise H and then applied unchanged to the test images. Also reported: the share
  of unseen-class images whose best class is a seen class, which shows the collapse onto seen
  classes directly. With a calibration stored in the model (``attrtag calibrate``), GZSL
  with its ``gamma`` too: what ``attrtag tag`` gets.
* **AUSUC**: the area under the seen-unseen accuracy curve over every ``gamma``
  (:func:`attrtag.zeroshot.metrics.ausuc`), which compares models without choosing one.

Class scores are :attr:`attrtag.zeroshot.classifier.ZeroShotResult.scores` (mean log match per class);
``gamma`` is in those units. Pure numpy; no torch.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Collection, Mapping, Sequence

import numpy as np

from ..errors import AttrtagError, spell
from ..schema import Schema
from .classifier import score_classes
from .metrics import GzslAccuracy, ZslAccuracy, ausuc, choose_gamma, evaluate_gzsl, evaluate_zsl, per_class_accuracy
from .rules import Rules


@dataclass(frozen=True)
class LabelledScores:
    """Class scores of labelled images.

    Attributes:
        scores: ``(N, C)`` class scores, columns in rule order.
        labels: ``(N,)`` class index of each image; ``-1``: no class, or not in the rules.
        skipped: class name -> images left out because the rules have no such class.
    """

    scores: np.ndarray
    labels: np.ndarray
    skipped: Mapping[str, int] = field(default_factory=dict)


def seen_and_unseen(
    rules: Rules, train_classes: Collection[str], unseen: Sequence[str] | None = None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split the classes of ``rules`` into seen and unseen, both in rule order.

    Args:
        rules: the class rules.
        train_classes: the class of every training image (repeats and unknown names are fine).
        unseen: the unseen classes when the user names them; default: the classes of the rules
            with no training image.

    Returns:
        ``(seen, unseen)``.

    Raises:
        AttrtagError: an ``unseen`` name that is not a class of the rules.
    """
    if unseen is not None:
        missing = [c for c in unseen if c not in rules.names]
        if missing:
            raise AttrtagError(
                f"`unseen`: {', '.join(missing)} not among the classes of the rules ({', '.join(rules.names)})"
            )
        chosen = set(unseen)
    else:
        trained = set(train_classes)
        chosen = {c for c in rules.names if c not in trained}
    return tuple(c for c in rules.names if c not in chosen), tuple(c for c in rules.names if c in chosen)


def labelled_scores(
    probs: Mapping[str, np.ndarray],
    classes: Sequence[str | None],
    rules: Rules,
    schema: Schema,
    *,
    priors: Mapping[str, np.ndarray] | None = None,
) -> LabelledScores:
    """Score every image against the rules and turn its class name into a column index.

    Args:
        probs: group -> ``(N, n_values)`` predicted distributions.
        classes: the true class of each image; ``None`` or ``""``: none.
        rules: the class rules.
        schema: the model's schema.
        priors: training label frequencies per group (see :func:`attrtag.zeroshot.score_classes`).

    Returns:
        Scores and labels (``-1`` for no class or a class the rules do not have).
    """
    n = len(classes)
    if n == 0:
        return LabelledScores(np.zeros((0, len(rules))), np.zeros(0, np.int64))
    index = {c: i for i, c in enumerate(rules.names)}
    labels = np.array([index.get(c, -1) if c else -1 for c in classes], dtype=np.int64)
    skipped = Counter(c for c in classes if c and c not in index)
    scores = score_classes(probs, rules, schema, priors=priors).scores
    return LabelledScores(scores, labels, dict(skipped))


@dataclass(frozen=True)
class ZeroShotReport:
    """Zero-shot figures of one model and rule set (see the module docstring).

    Attributes:
        seen: seen classes (rule order).
        unseen: unseen classes (rule order).
        images: counts of evaluated images: ``zsl``, ``gzsl_seen``, ``gzsl_unseen``,
            ``calibration`` (validation images used to choose gamma).
        zsl: ZSL accuracy, or None without images of unseen classes.
        zsl_per_class: unseen class -> ``{"top1": accuracy, "images": n}``.
        gzsl: GZSL accuracy without calibration, or None without both seen and unseen images.
        gzsl_calibrated: GZSL accuracy with gamma chosen on the validation images, or None.
        gzsl_stored: GZSL accuracy with the gamma stored in the model, or None.
        ausuc: area under the seen-unseen curve on the test images, or None without GZSL.
        unseen_as_seen: share of unseen-class images whose best class is seen:
            ``{"uncalibrated": x, "calibrated": y}`` (keys present when computed).
        chance: accuracy of a uniform random guess: ``zsl_top1``, ``zsl_top5``, ``gzsl``, and
            the AUSUC of random scores, ``ausuc`` = 1 / (2 * seen * unseen).
        skipped: class name -> images left out because the rules have no such class.
        notes: what could not be computed, and why (parameters marked up as
            :mod:`attrtag.errors` says).
    """

    seen: tuple[str, ...]
    unseen: tuple[str, ...]
    images: Mapping[str, int]
    zsl: ZslAccuracy | None
    zsl_per_class: Mapping[str, Mapping[str, float]]
    gzsl: GzslAccuracy | None
    gzsl_calibrated: GzslAccuracy | None
    unseen_as_seen: Mapping[str, float]
    chance: Mapping[str, float]
    skipped: Mapping[str, int]
    notes: tuple[str, ...]
    gzsl_stored: GzslAccuracy | None = None
    ausuc: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (``metrics.json``)."""
        return {
            "seen": list(self.seen),
            "unseen": list(self.unseen),
            "images": dict(self.images),
            "chance": dict(self.chance),
            "zsl": asdict(self.zsl) if self.zsl else None,
            "zsl_per_class": {c: dict(v) for c, v in self.zsl_per_class.items()},
            "gzsl": {
                "uncalibrated": asdict(self.gzsl) if self.gzsl else None,
                "calibrated": asdict(self.gzsl_calibrated) if self.gzsl_calibrated else None,
                "stored_calibration": asdict(self.gzsl_stored) if self.gzsl_stored else None,
            },
            "ausuc": self.ausuc,
            "unseen_as_seen": dict(self.unseen_as_seen),
            "skipped_classes": dict(self.skipped),
            "notes": [spell(n) for n in self.notes],
        }


def evaluate_zero_shot(
    test: LabelledScores,
    rules: Rules,
    *,
    seen: Sequence[str],
    unseen: Sequence[str],
    val: LabelledScores | None = None,
    stored_gamma: float | None = None,
) -> ZeroShotReport:
    """ZSL and GZSL figures on ``test``, GZSL calibrated with a gamma chosen on ``val``.

    Args:
        test: scores and labels of the images to report on.
        rules: the class rules (column order of the scores).
        seen: seen classes (from :func:`seen_and_unseen`).
        unseen: unseen classes.
        val: scores and labels of validation images; without it (or without both seen and
            unseen images in it) there is no calibrated result, and a note says why.
        stored_gamma: the gamma stored in the model for these rules, also evaluated on ``test``.

    Returns:
        The report. Figures that cannot be computed are None, with a note.
    """
    s_idx = [rules.index(c) for c in seen]
    u_idx = [rules.index(c) for c in unseen]
    y = test.labels
    n_seen = int(np.isin(y, s_idx).sum()) if s_idx else 0
    n_unseen = int(np.isin(y, u_idx).sum()) if u_idx else 0
    images = {"zsl": n_unseen, "gzsl_seen": n_seen, "gzsl_unseen": n_unseen, "calibration": 0}
    notes: list[str] = []
    zsl, per_class = _zsl(test, rules, u_idx, unseen, notes)
    g = _gzsl(test, val, s_idx, u_idx, stored_gamma, notes, images)
    return ZeroShotReport(
        seen=tuple(seen), unseen=tuple(unseen), images=images, zsl=zsl, zsl_per_class=per_class, gzsl=g.uncalibrated,
        gzsl_calibrated=g.calibrated, unseen_as_seen=g.unseen_as_seen, chance=_chance(len(s_idx), len(u_idx)),
        skipped=dict(test.skipped), notes=tuple(notes), gzsl_stored=g.stored, ausuc=g.area,
    )


def _chance(n_seen: int, n_unseen: int) -> dict[str, float]:
    """Accuracies of a uniform random guess (see :attr:`ZeroShotReport.chance`)."""
    chance: dict[str, float] = {}
    if n_unseen:
        chance["zsl_top1"] = 1.0 / n_unseen
        chance["zsl_top5"] = min(5, n_unseen) / n_unseen
    if n_seen and n_unseen:
        chance["gzsl"] = 1.0 / (n_seen + n_unseen)
        chance["ausuc"] = 1.0 / (2 * n_seen * n_unseen)
    return chance


def _zsl(
    test: LabelledScores, rules: Rules, u_idx: list[int], unseen: Sequence[str], notes: list[str]
) -> tuple[ZslAccuracy | None, dict[str, dict[str, float]]]:
    """ZSL accuracy and each unseen class's top-1; ``(None, {})`` and a note when there is none."""
    y = test.labels
    if not u_idx:
        notes.append("no unseen class: every class of the rules has training images (name some with `unseen`)")
        return None, {}
    if not np.isin(y, u_idx).any():
        notes.append(f"no evaluated image of an unseen class ({', '.join(unseen)}): no ZSL figures")
        return None, {}
    zsl = evaluate_zsl(test.scores, y, u_idx)
    per_class: dict[str, dict[str, float]] = {}
    for c in sorted(set(u_idx) & set(y.tolist())):
        per_class[rules.names[c]] = {
            "top1": per_class_accuracy(test.scores, y, k=1, candidates=u_idx, classes=[c]),
            "images": int((y == c).sum()),
        }
    return zsl, per_class


@dataclass
class _Gzsl:
    """The GZSL figures of a report; all None without images of both seen and unseen classes."""

    uncalibrated: GzslAccuracy | None = None
    calibrated: GzslAccuracy | None = None
    stored: GzslAccuracy | None = None
    area: float | None = None
    unseen_as_seen: dict[str, float] = field(default_factory=dict)


def _gzsl(
    test: LabelledScores, val: LabelledScores | None, s_idx: list[int], u_idx: list[int],
    stored_gamma: float | None, notes: list[str], images: dict[str, int],
) -> _Gzsl:
    """GZSL without calibration, with the stored gamma and with one chosen on ``val``.

    What cannot be computed gets a note in ``notes``; ``images["calibration"]`` counts the
    validation images the gamma was chosen on.
    """
    if not (s_idx and u_idx and images["gzsl_seen"] and images["gzsl_unseen"]):
        notes.append("GZSL needs evaluated images of both seen and unseen classes: no GZSL figures")
        return _Gzsl()
    y = test.labels
    out = _Gzsl(uncalibrated=evaluate_gzsl(test.scores, y, s_idx, u_idx), area=ausuc(test.scores, y, s_idx, u_idx))
    out.unseen_as_seen["uncalibrated"] = _unseen_as_seen(test, s_idx, u_idx, 0.0)
    if stored_gamma is not None:
        out.stored = evaluate_gzsl(test.scores, y, s_idx, u_idx, gamma=stored_gamma)
        out.unseen_as_seen["stored_calibration"] = _unseen_as_seen(test, s_idx, u_idx, stored_gamma)
    if val is None or not (np.isin(val.labels, s_idx).any() and np.isin(val.labels, u_idx).any()):
        notes.append("no validation images of both seen and unseen classes: no calibrated GZSL")
        return out
    images["calibration"] = int(np.isin(val.labels, s_idx + u_idx).sum())
    gamma = choose_gamma(val.scores, val.labels, s_idx, u_idx)
    out.calibrated = evaluate_gzsl(test.scores, y, s_idx, u_idx, gamma=gamma)
    out.unseen_as_seen["calibrated"] = _unseen_as_seen(test, s_idx, u_idx, gamma)
    return out


def evaluate_splits(
    probs: Mapping[str, np.ndarray],
    classes: Sequence[str | None],
    splits: Sequence[str | None],
    rules: Rules,
    schema: Schema,
    *,
    seen: Sequence[str],
    unseen: Sequence[str],
    priors: Mapping[str, np.ndarray] | None = None,
    stored_gamma: float | None = None,
) -> ZeroShotReport:
    """ZSL/GZSL on the test rows, ``gamma`` chosen on the val rows (rows aligned with ``probs``).

    Without split names (all None) every row is evaluated and there is no calibration.

    Args:
        probs: group -> ``(N, n_values)`` predicted distributions.
        classes: the true class of each row (None: none).
        splits: each row's split (``train``/``val``/``test``) or None.
        rules: the class rules.
        schema: the model's schema.
        seen: seen classes (see :func:`seen_and_unseen`).
        unseen: unseen classes.
        priors: training label frequencies to divide by (as tagging does), or None.
        stored_gamma: the model's stored calibration constant, also evaluated.

    Returns:
        The report.
    """
    def scored(split: str | None) -> LabelledScores:
        rows = np.array([s == split for s in splits], dtype=bool) if split else np.ones(len(splits), dtype=bool)
        part = {g: np.asarray(p)[rows] for g, p in probs.items()}
        return labelled_scores(part, [c for c, keep in zip(classes, rows) if keep], rules, schema, priors=priors)

    if not any(splits):
        return evaluate_zero_shot(scored(None), rules, seen=seen, unseen=unseen, stored_gamma=stored_gamma)
    return evaluate_zero_shot(scored("test"), rules, seen=seen, unseen=unseen, val=scored("val"),
                              stored_gamma=stored_gamma)


def _unseen_as_seen(data: LabelledScores, seen: list[int], unseen: list[int], gamma: float) -> float:
    """Share of unseen-class images whose best class (seen + unseen candidates) is a seen class."""
    rows = np.isin(data.labels, unseen)
    sub = data.scores[rows][:, seen + unseen].copy()
    sub[:, : len(seen)] -= gamma
    return float((sub.argmax(axis=1) < len(seen)).mean())


def format_zero_shot(
    report: ZeroShotReport, *, title: str = "zero-shot", flags: Mapping[str, str] | None = None
) -> str:
    """The report as a few lines of text (percentages, with chance and image counts).

    ``flags``: how the notes spell parameters (the CLI's table, see :func:`attrtag.errors.spell`);
    default: the Python names.
    """

    def pct(x: float | None) -> str:
        return "  n/a" if x is None else f"{100 * x:5.1f}%"

    r = report
    lines = [f"{title}: {len(r.seen)} seen + {len(r.unseen)} unseen classes"
             + (f" (unseen: {', '.join(r.unseen)})" if r.unseen else "")]
    if r.zsl is not None:
        lines.append(
            f"  ZSL  (unseen images, unseen candidates; {r.images['zsl']} images)  top-1 {pct(r.zsl.top1)}  "
            f"top-5 {pct(r.zsl.top5)}   chance {pct(r.chance.get('zsl_top1'))} / {pct(r.chance.get('zsl_top5'))}"
        )
        for c, v in r.zsl_per_class.items():
            lines.append(f"       {c}: {pct(v['top1'])} of {v['images']}")
    if r.gzsl is not None:
        lines.append(
            f"  GZSL (all candidates; {r.images['gzsl_seen']} seen + {r.images['gzsl_unseen']} unseen images, "
            f"chance {pct(r.chance.get('gzsl'))})"
        )
        rows = [("uncalibrated", r.gzsl, r.unseen_as_seen.get("uncalibrated"))]
        if r.gzsl_calibrated is not None:
            label = f"calibrated (gamma {r.gzsl_calibrated.gamma:.3g} from {r.images['calibration']} val images)"
            rows.append((label, r.gzsl_calibrated, r.unseen_as_seen.get("calibrated")))
        if r.gzsl_stored is not None:
            label = f"stored in the model (gamma {r.gzsl_stored.gamma:.3g})"
            rows.append((label, r.gzsl_stored, r.unseen_as_seen.get("stored_calibration")))
        for label, g, collapse in rows:
            lines.append(
                f"       {label}: seen {pct(g.seen)}  unseen {pct(g.unseen)}  H {pct(g.harmonic)}"
                f"  (unseen images called seen: {pct(collapse)})"
            )
        lines.append(f"       AUSUC {r.ausuc:.3f} (area under the seen-unseen curve over every gamma; "
                     f"random scores {r.chance.get('ausuc', 0.0):.3f})")
    if r.skipped:
        skipped = ", ".join(f"{c} {n}" for c, n in sorted(r.skipped.items()))
        lines.append(f"  left out (class not in the rules): {skipped}")
    lines += [f"  note: {spell(n, flags)}" for n in r.notes]
    return "\n".join(lines)
