"""What travels with a model to correct zero-shot class scores: label priors and a calibration.

Both are stored in the model card (:mod:`attrtag.card`) and applied by
:class:`~attrtag.zeroshot.classifier.ClassScorer`; the maths is in ``datasets/RULES.md``.

* **Priors**: the card's ``label_counts`` (training labels per group and value) become
  frequencies with one pseudo-count per value and a floor (:func:`priors_from_counts`), so a
  value no (or almost no) training image carried divides by a modest prior, never by ~zero; a
  multi-label value's prior is its share of present labels among the images it is known in
  (``label_totals``).
* **Calibration**: the calibrated-stacking constant ``gamma`` (Chao et al., ECCV 2016) that
  ``attrtag calibrate`` chose on labelled images, subtracted from the scores of the classes
  that had training images. A ``gamma`` is a number in the units of one scoring of one rule set,
  so a :class:`Calibration` records what it holds for: the SHA-256 of the rules
  (:func:`rules_digest`), the seen classes by name, and whether scores were divided by the
  priors. :func:`resolve_calibration` applies it only when all three match and otherwise says
  why not; the caller prints that as a warning and scores without it.

Pure Python and numpy; no torch, no I/O.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import AttrtagError
from .rules import Rules

#: Added to every label count before dividing by the prior (Laplace smoothing).
PRIOR_PSEUDOCOUNT = 1.0
#: No value's smoothed count is below this share of the group's mean count (its images / values).
#: Why: dividing by a prior boosts a value by ``-log prior``. A value no training image carried
#: has a prior of about 1/N, so with 10,000 images any class that needs it gains log 10,000 ~ 9.2
#: and wins every image, though the model never learnt the value (the lint warns about it). With
#: the floor the boost of a rare value over a value of average frequency is at most log(1/0.25)
#: ~ 1.4: the model must still give the unseen value a quarter of an average value's probability
#: for its class to tie. Counts above the floor (most values of a trained model) are unchanged,
#: and so are small counts (N / V below 4), where the pseudo-count already dominates.
PRIOR_FLOOR = 0.25
_CORE = ("gamma", "seen", "priors", "rules_sha256")


def priors_from_counts(
    counts: Mapping[str, Sequence[int]], totals: Mapping[str, Sequence[int]] | None = None
) -> dict[str, np.ndarray]:
    """Prior frequencies from training label counts, smoothed (see :data:`PRIOR_FLOOR`).

    Args:
        counts: images per group and value (a multi-label group: the images a value is present in).
        totals: per multi-label group, the images each value is known in (present or absent).

    Returns:
        group -> ``max(counts + 1, PRIOR_FLOOR * mean count)`` per value (not normalised;
        :class:`~attrtag.zeroshot.classifier.ClassScorer` normalises each exclusive group), and
        for a group of ``totals`` each value's probability of being present from its two states,
        present and absent, each smoothed alike: ``max(n + 1, PRIOR_FLOOR * known / 2)``.
    """
    by_name = {str(g): np.asarray(c, dtype=np.float64) for g, c in counts.items()}
    out = {g: _smoothed(c) for g, c in by_name.items()}
    for g, known in (totals or {}).items():
        if str(g) in out:
            present = by_name[str(g)]
            states = np.stack([present, np.asarray(known, dtype=np.float64) - present], axis=1)  # (V, 2)
            smoothed = _smoothed(states, axis=1)
            out[str(g)] = smoothed[:, 0] / smoothed.sum(axis=1)
    return out


def _smoothed(counts: np.ndarray, axis: int = -1) -> np.ndarray:
    """``counts`` plus one pseudo-count, raised to :data:`PRIOR_FLOOR` of their mean along ``axis``."""
    floor = PRIOR_FLOOR * counts.mean(axis=axis, keepdims=True) if counts.size else 0.0
    return np.maximum(counts + PRIOR_PSEUDOCOUNT, floor)


def rules_digest(rules: Rules) -> str:
    """Hex SHA-256 of the rules' dict form with sorted keys: equal for rules that score alike,
    whether they come from a YAML file, a model's metadata or an output header."""
    text = json.dumps(rules.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Calibration:
    """A calibrated-stacking constant and what it holds for.

    Attributes:
        gamma: subtracted from every seen class's score (score units: mean log match).
        seen: the classes that had training images (the ones ``gamma`` lowers).
        priors: True when ``gamma`` was chosen on scores divided by the label priors.
        rules_sha256: :func:`rules_digest` of the rules it was chosen with.
        info: how it was chosen (manifest, split, images, accuracies before and after, AUSUC);
            stored and shown, not part of equality.
    """

    gamma: float
    seen: tuple[str, ...]
    priors: bool
    rules_sha256: str
    info: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.gamma, bool) or not isinstance(self.gamma, (int, float)) or not math.isfinite(self.gamma):
            raise AttrtagError(f"calibration: gamma must be a finite number, got {self.gamma!r}")
        if not self.seen or not all(isinstance(c, str) for c in self.seen):
            raise AttrtagError(f"calibration: 'seen' must list the seen classes by name, got {self.seen!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (the card's ``calibration`` entry, output headers)."""
        return {"gamma": float(self.gamma), "seen": list(self.seen), "priors": self.priors,
                "rules_sha256": self.rules_sha256, **self.info}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "calibration") -> "Calibration":
        """Inverse of :meth:`to_dict`.

        Raises:
            AttrtagError: a missing or mistyped entry, naming ``source`` and the entry.
        """
        missing = [k for k in _CORE if k not in d]
        if missing:
            raise AttrtagError(
                f"{source}: calibration lacks {', '.join(missing)}; run 'attrtag calibrate' again to replace it"
            )
        seen, priors = d["seen"], d["priors"]
        if not isinstance(seen, list) or not isinstance(priors, bool) or not isinstance(d["rules_sha256"], str):
            raise AttrtagError(f"{source}: calibration entries have the wrong types ({dict(d)!r})")
        try:
            return cls(float(d["gamma"]), tuple(seen), priors, d["rules_sha256"],
                       info={k: v for k, v in d.items() if k not in _CORE})
        except (TypeError, ValueError):
            raise AttrtagError(f"{source}: calibration gamma {d['gamma']!r} is not a number") from None

    def describe(self) -> str:
        """``gamma 0.42 on 12 seen classes`` (+ where it was chosen, when known)."""
        where = self.info.get("chosen_on")
        return f"gamma {self.gamma:.4g} on {len(self.seen)} seen classes" + (f" (chosen on {where})" if where else "")


def resolve_calibration(
    stored: Calibration | Mapping[str, Any] | None, rules: Rules, *, priors: bool, source: str
) -> tuple[Calibration | None, str | None]:
    """The stored calibration when it holds for these rules and this scoring.

    Args:
        stored: the calibration of a model card or output header (dict or object), or None.
        rules: the rules this run scores with.
        priors: whether this run divides by label priors.
        source: where the calibration comes from (e.g. ``"model.onnx"``), for messages.

    Returns:
        ``(calibration, None)`` when it applies; ``(None, why)`` when there is one that does not
        (the caller warns with ``why``); ``(None, None)`` when there is none.

    Raises:
        AttrtagError: a stored calibration that cannot be read.
    """
    if stored is None:
        return None, None
    cal = stored if isinstance(stored, Calibration) else Calibration.from_dict(stored, source=source)
    fix = "run 'attrtag calibrate' for this case, or 'attrtag classify --gamma G' to apply a constant yourself"
    if cal.rules_sha256 != rules_digest(rules):
        return None, (f"{source}: its calibration ({cal.describe()}) was chosen for other class rules than these, "
                      f"so it is not applied; {fix}")
    if cal.priors != priors:
        how = "with" if cal.priors else "without"
        now = "off (`priors=False`, or no label counts)" if cal.priors else "on (`priors=False` turns them off)"
        return None, (f"{source}: its calibration ({cal.describe()}) was chosen on scores {how} label priors, "
                      f"which are {now} in this run, so it is not applied; {fix}")
    return cal, None


def given_calibration(
    gamma: float, rules: Rules, *, priors: bool, seen: Sequence[str] | None = None,
    stored: Calibration | None = None, source: str = "",
) -> Calibration:
    """A constant given by hand (``attrtag classify --gamma G``) as a calibration of ``rules``.

    Args:
        gamma: the constant.
        rules: the rules it applies to.
        priors: whether the run divides by label priors.
        seen: the classes it lowers; default: those of ``stored`` that ``rules`` have.
        stored: the calibration the scores came with, if any.
        source: where ``stored`` comes from, for messages.

    Raises:
        AttrtagError: no seen class to apply it to, or one the rules do not have.
    """
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not math.isfinite(gamma):
        raise AttrtagError(f"`gamma` must be a finite number, got {gamma!r}")
    names = list(seen) if seen else [c for c in (stored.seen if stored else ()) if c in rules.names]
    if not names:
        raise AttrtagError(f"`gamma={gamma:g}`: which classes are seen? {source or 'the input'} stores no calibration "
                           "naming them (for these rules); pass `seen=A,B,...`")
    missing = [c for c in names if c not in rules.names]
    if missing:
        raise AttrtagError(f"`seen`: {', '.join(missing)} not among the classes of the rules ({', '.join(rules.names)})")
    return Calibration(gamma, tuple(names), priors, rules_digest(rules), info={"chosen_on": "--gamma"})
