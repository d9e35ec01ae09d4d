"""Zero-shot class fields of tag records: attribute distributions + rules -> ranked classes.

The fields (``class``, ``class_prob``, ``classes``, ``class_explanation``) are documented in
``datasets/OUTPUT.md``. Class fields are computed from the *rounded* group distributions that
a record itself holds, so ``attrtag classify`` re-scoring a finished output reproduces them
exactly; for that the header stores what else the scores used: the label counts the priors
come from and the calibration (:mod:`attrtag.zeroshot.calibration`). The rules are compiled once
per run (:class:`~attrtag.zeroshot.classifier.ClassScorer`), not per batch. Pure numpy: no torch,
no I/O.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import AttrtagError
from ..schema import Schema
from .calibration import Calibration, priors_from_counts, resolve_calibration
from .classifier import ClassScorer
from .rules import Rules, RulesSource, resolve_rules

#: Record fields (and flat columns, in this order) added by :class:`ClassTagging`.
CLASS_FIELDS = ("class", "class_prob", "classes", "class_explanation")

#: ``class`` of an image whose best class probability is below the unknown threshold.
UNKNOWN = "unknown"

DEFAULT_TOP_K = 5
_DECIMALS = 6  # as the group probabilities of a record (attrtag.tagging.records)


@dataclass(frozen=True)
class ClassTagging:
    """How records get class fields: the rules and the scoring options of one run.

    Attributes:
        rules: the class rules.
        top_k: classes kept in ``classes`` (capped at the number of classes).
        unknown_threshold: ``class`` is ``"unknown"`` when the best normalised probability is
            below this (0: never).
        overrides: group -> value forced before scoring (``--set``).
        source: where the rules came from (a file, or the model's metadata), for messages and
            the output header; not part of equality.
        label_counts: training label counts per group; scores are divided by the priors they
            give (:func:`~attrtag.zeroshot.calibration.priors_from_counts`). None: no priors.
        calibration: calibrated stacking applied to the seen classes, or None.
    """

    rules: Rules
    top_k: int = DEFAULT_TOP_K
    unknown_threshold: float = 0.0
    overrides: Mapping[str, str] = field(default_factory=dict)
    source: str = field(default="", compare=False)
    label_counts: Mapping[str, tuple[int, ...]] | None = None
    calibration: Calibration | None = None
    _scorers: dict[Schema, ClassScorer] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1:
            raise AttrtagError(f"--class-top-k must be an integer >= 1, got {self.top_k!r}")
        if not 0.0 <= self.unknown_threshold <= 1.0:
            raise AttrtagError(
                f"--unknown-threshold must be a probability between 0 and 1, got {self.unknown_threshold!r}"
            )
        if UNKNOWN in self.rules.names:
            where = self.rules[UNKNOWN].where or self.source or "rules"
            raise AttrtagError(
                f"{where}: a class is named '{UNKNOWN}', which tagging writes for images below the "
                "unknown threshold; rename the class"
            )
        self.rules.require_scorable()

    def check(self, schema: Schema) -> None:
        """Check rules, overrides, priors and calibration against the model's schema.

        Raises:
            AttrtagError: "file:line: ..." for an unknown group or value in the rules, an
                override naming an unknown group or value, label counts that do not fit the
                schema, a calibration naming a class the rules do not have.
        """
        self.rules.check(schema)
        self.scorer(schema)  # compiles priors and calibration: fail before the first batch
        for group, value in self.overrides.items():
            if group not in schema:
                raise AttrtagError(
                    f"--set {group}={value}: unknown group '{group}' (groups: {', '.join(schema.names)})"
                )
            if value not in schema[group].values:
                raise AttrtagError(
                    f"--set {group}={value}: unknown value '{value}' (allowed: {', '.join(schema[group].values)})"
                )

    def fields(self, probs: Mapping[str, np.ndarray], schema: Schema) -> list[dict[str, Any]]:
        """The class fields of ``N`` images.

        Args:
            probs: group -> ``(N, n_values)`` distributions, as written in the records (rounded).
            schema: the model's schema.

        Returns:
            One ``{field: value}`` per image, keys in :data:`CLASS_FIELDS` order.
        """
        if not probs or next(iter(probs.values())).shape[0] == 0:
            return []
        result = self.scorer(schema)(
            probs, overrides=dict(self.overrides), unknown_threshold=self.unknown_threshold, top_k=self.top_k
        )
        names = result.class_names
        top = result.top_k.tolist()
        top_probs = np.round(result.top_k_probs, _DECIMALS).tolist()
        out = []
        for i, (idx, ps, unknown) in enumerate(zip(top, top_probs, result.unknown.tolist())):
            explanation = result.explain(i, idx[0])
            out.append({
                "class": UNKNOWN if unknown else names[idx[0]],
                "class_prob": ps[0],
                "classes": [{"class": names[c], "prob": p} for c, p in zip(idx, ps)],
                "class_explanation": {g: round(v, _DECIMALS) for g, v in explanation.items()},
            })
        return out

    def scorer(self, schema: Schema) -> ClassScorer:
        """The compiled scorer of these rules, priors and calibration for ``schema``.

        Compiled once per schema and kept: every batch of a run reuses the same matrices.
        """
        scorer = self._scorers.get(schema)
        if scorer is None:
            cal = self.calibration
            scorer = self._scorers[schema] = ClassScorer(
                self.rules, schema, priors=None if self.label_counts is None else priors_from_counts(self.label_counts),
                gamma=cal.gamma if cal else 0.0, seen=cal.seen if cal else (),
            )
        return scorer

    def to_dict(self) -> dict[str, Any]:
        """JSON header form (compared when an output is resumed)."""
        return {
            "rules": self.rules.to_dict(),
            "rules_source": self.source,
            "top_k": self.top_k,
            "unknown_threshold": self.unknown_threshold,
            "overrides": dict(self.overrides),
            "priors": None if self.label_counts is None else {g: list(c) for g, c in self.label_counts.items()},
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], schema: Schema, *, source: str) -> "ClassTagging":
        """Inverse of :meth:`to_dict`; ``source`` names the file in errors."""
        rules_source = str(d.get("rules_source") or "")
        where = f"{source} (class rules{' from ' + rules_source if rules_source else ''})"
        counts, cal = d.get("priors"), d.get("calibration")  # absent from headers written before priors travelled
        return cls(
            Rules.from_dict(d["rules"], schema, source=where),
            top_k=int(d["top_k"]),
            unknown_threshold=float(d["unknown_threshold"]),
            overrides={str(g): str(v) for g, v in (d.get("overrides") or {}).items()},
            source=rules_source,
            label_counts=None if counts is None else {str(g): tuple(int(c) for c in v) for g, v in counts.items()},
            calibration=None if cal is None else Calibration.from_dict(cal, source=where),
        )

    def describe(self) -> str:
        """One line for logs and error messages: how many classes, from where, which options."""
        opts = [f"top {self.top_k}"]
        if self.unknown_threshold:
            opts.append(f"unknown below {self.unknown_threshold:g}")
        if self.overrides:
            opts.append("set " + ", ".join(f"{g}={v}" for g, v in self.overrides.items()))
        if self.label_counts is not None:
            opts.append("label priors")
        if self.calibration is not None:
            opts.append(f"calibrated: {self.calibration.describe()}")
        return f"{len(self.rules)} classes from {self.source or 'rules'} ({'; '.join(opts)})"

    def scoring_note(self) -> str | None:
        """One line saying which corrections the class scores get, or None without any."""
        parts = []
        if self.label_counts is not None:
            parts.append("divided by the model's training label priors (--no-priors to turn off)")
        if self.calibration is not None:
            parts.append(f"calibrated: {self.calibration.describe()} (--no-calibration to turn off)")
        return ("class scores " + "; ".join(parts)) if parts else None


def class_tagging_for(
    schema: Schema,
    embedded: Mapping[str, Any] | None,
    rules: RulesSource | bool | None,
    *,
    model_name: str,
    top_k: int = DEFAULT_TOP_K,
    unknown_threshold: float = 0.0,
    overrides: Mapping[str, str] | None = None,
    warn: Callable[[str], Any] | None = None,
    label_counts: Mapping[str, Sequence[int]] | None = None,
    calibration: Calibration | Mapping[str, Any] | None = None,
) -> ClassTagging | None:
    """The class rules and options of a tagging run: given rules, else the model's own, else none.

    Args:
        schema: the model's schema.
        embedded: rules stored in the model's card, or None.
        rules: rules to use (file, dict, :class:`Rules`); ``None`` the embedded ones when there
            are any; ``True`` the embedded ones, which must exist; ``False`` none.
        model_name: the model file's name, for messages.
        top_k: classes listed per record.
        unknown_threshold: ``class`` is ``unknown`` below this normalised probability.
        overrides: interventions (group -> value).
        warn: called with each lint warning of the rules, and with the reason when
            ``calibration`` does not hold for these rules (default: ignored).
        label_counts: the model's training label counts: scores are divided by their priors
            (None: no priors).
        calibration: the model's calibration; applied when it was chosen for these rules and
            this scoring (:func:`~attrtag.zeroshot.calibration.resolve_calibration`).

    Returns:
        The class tagging, or None when the run has no rules.

    Raises:
        AttrtagError: bad rules ("file:line: ..."), no embedded rules with ``True``, bad options.
    """
    if rules is False or (rules is None and embedded is None):
        return None
    if rules is None or rules is True:
        if embedded is None:
            raise AttrtagError(f"{model_name}: the model has no embedded rules; pass a rules file")
        loaded, source = resolve_rules(embedded, schema, source=f"{model_name} metadata",
                                       label_counts=label_counts), f"{model_name} metadata"
    else:
        loaded = resolve_rules(rules, schema, label_counts=label_counts)
        source = str(rules) if isinstance(rules, (str, os.PathLike)) else "rules"
    found, warnings = loaded
    cal, why = resolve_calibration(calibration, found, priors=label_counts is not None, source=model_name)
    for message in warnings + ([why] if why else []):
        if warn is not None:
            warn(message)
    counts = None if label_counts is None else {str(g): tuple(int(c) for c in v) for g, v in label_counts.items()}
    tagging = ClassTagging(found, top_k=top_k, unknown_threshold=unknown_threshold, overrides=dict(overrides or {}),
                           source=source, label_counts=counts, calibration=cal)
    tagging.check(schema)
    return tagging
