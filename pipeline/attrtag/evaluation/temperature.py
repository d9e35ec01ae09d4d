"""Fitting each group's temperature on labelled images, and measuring calibration (ECE).

Temperature scaling (Guo et al. 2017) fits one T > 0 per group by minimising the negative
log-likelihood of the labelled images; the NLL is convex in 1/T, so it has one minimum along
``log T`` and a golden-section search over ``[MIN_T, MAX_T]`` finds it without gradients.
Everything works from probabilities (:mod:`attrtag.runtime.temperature` recovers the logits),
so an ONNX model is refitted as a checkpoint is. Numpy only.

The expected calibration error is the top-label ECE of Guo et al. with :data:`BINS` equal-width
bins over the labelled images: per bin, |accuracy - mean confidence| weighted by the bin's share.
For a multi-label group it is the same over every known (image, value) pair with the value's
probability as the confidence and its presence as the outcome (the reliability of each value's
probability, all values pooled).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..runtime.temperature import apply_temperature, apply_temperatures, probs_to_logits
from ..schema import Schema

__all__ = ["BINS", "GroupCalibration", "Reliability", "apply_temperature", "calibration_report",
           "expected_calibration_error", "fit_temperature", "fit_temperatures", "group_eces", "raw_and_calibrated",
           "reliability"]

#: The search range of a temperature: beyond it a model is not mis-calibrated but broken (or perfect).
MIN_T, MAX_T = 0.05, 20.0
#: Equal-width confidence bins of the ECE (Guo et al. use 15).
BINS = 15
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
#: The prior on log T (normal, mean 0: no change): one temperature fitted on few images is a
#: guess, and a val split of 18 images the model gets all right would otherwise drive T to MIN_T,
#: probabilities of 0 and 1 on every image after. Its weight falls as 1/N, so it is felt only on
#: small splits (N = 1000: T = 2 is pulled by under 1%).
PRIOR_SD = 1.0


def _labelled(probs: np.ndarray, targets: np.ndarray, multi: bool) -> tuple[np.ndarray, np.ndarray]:
    """The labelled part: ``(probs rows, target per row)`` (exclusive) or ``(p, 0/1)`` per known pair (multi)."""
    probs, targets = np.asarray(probs), np.asarray(targets)
    if multi:
        known = targets >= 0
        return probs[known], targets[known]
    keep = targets >= 0
    return probs[keep], targets[keep]


def _nll(logits: np.ndarray, y: np.ndarray, temperature: float, multi: bool) -> float:
    """Mean negative log-likelihood at ``temperature``, plus the prior's share per image (MAP)."""
    prior = math.log(temperature) ** 2 / (2 * PRIOR_SD**2 * len(y))
    z = logits / temperature
    if multi:  # binary cross-entropy with logits, stable for large |z|
        return float(np.mean(np.logaddexp(0.0, z) - y * z)) + prior
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(y)), y])) + prior


def fit_temperature(probs: np.ndarray, targets: np.ndarray, *, multi: bool) -> float:
    """The one temperature of a group that minimises the NLL of its labelled images (with a weak
    prior on log T, :data:`PRIOR_SD`, so that a handful of images cannot set it to a bound).

    Args:
        probs: ``[N, n]`` raw probabilities of the group.
        targets: ``[N]`` value indices (exclusive) or ``[N, n]`` 0/1 per value (multi-label);
            -1 = no label, left out.
        multi: the group is multi-label.

    Returns:
        T in ``[MIN_T, MAX_T]``; 1.0 without labelled images.
    """
    p, y = _labelled(probs, targets, multi)
    if len(y) == 0:
        return 1.0
    logits = probs_to_logits(p, multi=multi)
    y = y.astype(np.float64) if multi else y.astype(np.int64)
    lo, hi = math.log(MIN_T), math.log(MAX_T)
    a, b = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
    fa, fb = _nll(logits, y, math.exp(a), multi), _nll(logits, y, math.exp(b), multi)
    while hi - lo > 1e-5:  # about 30 steps: T to 1e-5 relative
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - _GOLDEN * (hi - lo)
            fa = _nll(logits, y, math.exp(a), multi)
        else:
            lo, a, fa = a, b, fb
            b = lo + _GOLDEN * (hi - lo)
            fb = _nll(logits, y, math.exp(b), multi)
    return float(math.exp((lo + hi) / 2))


@dataclass(frozen=True)
class Reliability:
    """What a reliability diagram draws: per confidence bin, its mean confidence, accuracy and count.

    Attributes:
        edges: ``BINS + 1`` bin edges from 0 to 1.
        confidence: mean confidence per bin (NaN where empty).
        accuracy: accuracy (exclusive) or share of positives (multi-label) per bin (NaN where empty).
        counts: images (pairs) per bin.
        ece: the expected calibration error (None without labels).
    """

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    counts: np.ndarray
    ece: float | None


def reliability(probs: np.ndarray, targets: np.ndarray, *, multi: bool, bins: int = BINS) -> Reliability:
    """Per-bin confidence, accuracy and count, and the ECE, over the labelled images (see the module docstring)."""
    p, y = _labelled(probs, targets, multi)
    if multi:
        conf, hit = p.astype(np.float64), y.astype(np.float64)
    else:
        conf = p.max(axis=1).astype(np.float64) if len(y) else np.zeros(0)
        hit = (p.argmax(axis=1) == y).astype(np.float64) if len(y) else np.zeros(0)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bins are (lo, hi], the first [0, hi]: a confidence of exactly 1 falls in the last bin.
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, conf, minlength=bins) / counts
        accuracy = np.bincount(which, hit, minlength=bins) / counts
    ece = float(np.nansum(counts * np.abs(accuracy - mean_conf)) / counts.sum()) if counts.sum() else None
    return Reliability(edges, mean_conf, accuracy, counts, ece)


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, *, multi: bool,
                               bins: int = BINS) -> float | None:
    """The ECE over the labelled images (pairs for a multi-label group); None without labels."""
    return reliability(probs, targets, multi=multi, bins=bins).ece


def group_targets(schema: Schema, targets: np.ndarray) -> dict[str, np.ndarray]:
    """Each group's targets from :class:`~attrtag.evaluation.evaluate.Predictions` rows: ``[N]`` or ``[N, n]``."""
    out: dict[str, np.ndarray] = {}
    for j, g in enumerate(schema.groups):
        out[g.name] = targets[:, schema.multi_slices[g.name]] if g.multi else targets[:, j]
    return out


def fit_temperatures(schema: Schema, probs: Mapping[str, np.ndarray], targets: np.ndarray, *,
                     fitted_on: str = "") -> dict[str, Any]:
    """Every labelled group's temperature, as a model card's ``temperatures`` entry.

    Args:
        schema: the model's schema.
        probs: ``{group: [N, n]}`` raw probabilities (a predictor opened with ``calibrated=False``).
        targets: ``[N, W]`` target rows (:attr:`attrtag.schema.Schema.multi_slices`), -1 = no label.
        fitted_on: the images, in words (stored with the temperatures).

    Returns:
        ``{"groups": {group: T}, "fitted_on": ...}``; a group without labels is left out (T = 1).
    """
    per_group = group_targets(schema, targets)
    groups = {}
    for g in schema.groups:
        if (per_group[g.name] >= 0).any():
            groups[g.name] = round(fit_temperature(probs[g.name], per_group[g.name], multi=g.multi), 6)
    return {"groups": groups, "fitted_on": fitted_on}



def group_eces(schema: Schema, probs: Mapping[str, np.ndarray], targets: np.ndarray) -> dict[str, float | None]:
    """Each group's ECE over its labelled images (None for a group without labels)."""
    per_group = group_targets(schema, targets)
    return {g.name: expected_calibration_error(probs[g.name], per_group[g.name], multi=g.multi) for g in schema.groups}


@dataclass(frozen=True)
class GroupCalibration:
    """One group's calibration before and after its temperature (what ``attrtag evaluate`` reports).

    Attributes:
        group: the group.
        temperature: the card's temperature (1.0: none stored, raw = calibrated).
        raw: reliability of the raw probabilities.
        calibrated: reliability at the temperature.
    """

    group: str
    temperature: float
    raw: Reliability
    calibrated: Reliability

    @property
    def labelled(self) -> int:
        """Labelled images (known image-value pairs for a multi-label group) the ECE is over."""
        return int(self.raw.counts.sum())

    def to_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "ece_raw": self.raw.ece, "ece_calibrated": self.calibrated.ece,
                "ece_bins": len(self.raw.counts), "ece_over": self.labelled}


def raw_and_calibrated(probs: Mapping[str, np.ndarray], schema: Schema, applied: Mapping[str, float],
                       temperatures: Mapping[str, float]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The raw probabilities and those at ``temperatures``, from a predictor's output.

    Args:
        probs: the predictor's output, at the temperatures it ``applied`` (``predictor.temperatures``).
        schema: the model's schema.
        applied: ``{group: T}`` already in ``probs`` (undone with 1 / T: scaling composes).
        temperatures: ``{group: T}`` to calibrate with (the card's).
    """
    raw = apply_temperatures(probs, schema, {g: 1.0 / t for g, t in applied.items()}) if applied else dict(probs)
    if dict(temperatures) == dict(applied):
        return raw, dict(probs)
    return raw, apply_temperatures(raw, schema, temperatures)


def calibration_report(schema: Schema, raw: Mapping[str, np.ndarray], calibrated: Mapping[str, np.ndarray],
                       targets: np.ndarray, temperatures: Mapping[str, float]) -> list[GroupCalibration]:
    """Each group's :class:`GroupCalibration`, in schema order."""
    per_group = group_targets(schema, targets)
    return [GroupCalibration(g.name, float(temperatures.get(g.name, 1.0)),
                             reliability(raw[g.name], per_group[g.name], multi=g.multi),
                             reliability(calibrated[g.name], per_group[g.name], multi=g.multi))
            for g in schema.groups]
