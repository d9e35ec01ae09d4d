"""How a run scores classes, built in one place: rules, label priors, calibration and options.

Every caller that names classes (tagging, ``classify`` re-scoring a tag file, evaluation,
calibration, export, the Python API) gets its :class:`ClassScoring` from :func:`class_scoring`,
which reads what travels with a model (its card) or with a tag file (its header) and applies
the options: which rules (given, or the embedded ones, or none), label priors on or off, the
stored calibration when it holds for these rules (else a warning), or a hand-given constant,
and the class options (top-k, unknown threshold, interventions). The rules are resolved and
checked against the schema once, and compiled once into a
:class:`~attrtag.zeroshot.classifier.ClassScorer`.

The record fields the scores become are written by :mod:`attrtag.tagging.records`, which owns
every field of a record. Pure numpy: no torch, no I/O beyond reading a rules file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence, Union

import numpy as np

from ..errors import AttrtagError
from ..schema import Schema
from .calibration import Calibration, given_calibration, priors_from_counts, resolve_calibration
from .classifier import DEFAULT_CLASS_TOP_K, ClassScorer, ZeroShotResult, override_labels
from .rules import Rules, RulesSource, resolve_rules

Warn = Callable[[str], Any]


class Carrier(Protocol):
    """What travels with a model (its :class:`~attrtag.card.ModelCard`) or a tag file (its header).

    Attributes:
        schema: the groups and values.
        rules: embedded class rules (their dict form, or :class:`Rules`), or None.
        label_counts: training label counts per group, or None.
        label_totals: per multi-label group, the training images each value is known in, or None.
        calibration: a stored calibration (dict or :class:`Calibration`), or None.
    """

    schema: Schema
    rules: Any
    label_counts: Mapping[str, Sequence[int]] | None
    label_totals: Mapping[str, Sequence[int]] | None
    calibration: Any


@dataclass(frozen=True)
class ClassScoring:
    """The rules and scoring options of one run, compiled for one schema.

    Attributes:
        rules: the class rules (checked against ``schema``).
        schema: the model's groups and values.
        top_k: classes kept in a record's ``classes`` (capped at the number of classes).
        unknown_threshold: a record's ``class`` is ``unknown`` when the best normalised
            probability is below this (0: never).
        overrides: group -> value forced before scoring (an intervention; for a multi-label
            group a label as a manifest writes it, see
            :func:`~attrtag.zeroshot.classifier.override_labels`).
        source: where the rules came from (a file, or a model's metadata), for messages and
            output headers; not part of equality.
        label_counts: training label counts per group: scores are divided by the priors they
            give (:func:`~attrtag.zeroshot.calibration.priors_from_counts`). None: no priors.
        calibration: calibrated stacking applied to the seen classes, or None.
        label_totals: per multi-label group, the training images each value is known in (with
            ``label_counts``, a value's prior is present / known). None: none.
        label_counts_known: False when read from a header written before priors travelled:
            whether its run divided by priors is unknown (``label_counts`` is None). Not part
            of equality.
    """

    rules: Rules
    schema: Schema
    top_k: int = DEFAULT_CLASS_TOP_K
    unknown_threshold: float = 0.0
    overrides: Mapping[str, str] = field(default_factory=dict)
    source: str = field(default="", compare=False)
    label_counts: Mapping[str, tuple[int, ...]] | None = None
    calibration: Calibration | None = None
    label_totals: Mapping[str, tuple[int, ...]] | None = None
    label_counts_known: bool = field(default=True, compare=False, repr=False)
    scorer: ClassScorer = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1:
            raise AttrtagError(f"`class_top_k` must be an integer >= 1, got {self.top_k!r}")
        if not 0.0 <= self.unknown_threshold <= 1.0:
            raise AttrtagError(
                f"`unknown_threshold` must be a probability between 0 and 1, got {self.unknown_threshold!r}"
            )
        for group, value in self.overrides.items():
            if group not in self.schema:
                raise AttrtagError(f"`overrides` {group}={value}: unknown group '{group}' "
                                   f"(groups: {', '.join(self.schema.names)})")
            if self.schema[group].multi:
                override_labels(self.schema[group], value, f"`overrides` {group}={value}")
            elif value not in self.schema[group].values:
                raise AttrtagError(f"`overrides` {group}={value}: unknown value '{value}' "
                                   f"(allowed: {', '.join(self.schema[group].values)})")
        self.rules.require_scorable()
        cal = self.calibration
        # Compiled once: the rules' matrices, the priors and the calibration offsets.
        object.__setattr__(self, "scorer", ClassScorer(
            self.rules, self.schema, priors=self.priors, gamma=cal.gamma if cal else 0.0, seen=cal.seen if cal else (),
        ))

    @property
    def priors(self) -> dict[str, np.ndarray] | None:
        """The label priors scores are divided by, or None."""
        return None if self.label_counts is None else priors_from_counts(self.label_counts, self.label_totals)

    def __call__(self, probs: Mapping[str, np.ndarray]) -> ZeroShotResult:
        """Score ``probs`` (group -> ``(N, n_values)``) with these rules and options."""
        return self.scorer(probs, overrides=dict(self.overrides), unknown_threshold=self.unknown_threshold,
                           top_k=self.top_k)

    def to_dict(self) -> dict[str, Any]:
        """JSON header form (compared when an output is resumed)."""
        d: dict[str, Any] = {
            "rules": self.rules.to_dict(),
            "rules_source": self.source,
            "top_k": self.top_k,
            "unknown_threshold": self.unknown_threshold,
            "overrides": dict(self.overrides),
            "priors": None if self.label_counts is None else {g: list(c) for g, c in self.label_counts.items()},
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
        }
        if self.label_totals is not None:  # only then: headers without multi-label priors stay as they were
            d["label_totals"] = {g: list(c) for g, c in self.label_totals.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], schema: Schema, *, source: str) -> "ClassScoring":
        """Inverse of :meth:`to_dict`; ``source`` names the file in errors."""
        rules_source = str(d.get("rules_source") or "")
        where = f"{source} (class rules{' from ' + rules_source if rules_source else ''})"
        # Absent from headers written before priors (and multi-label totals) travelled.
        counts, totals, cal = d.get("priors"), d.get("label_totals"), d.get("calibration")
        return cls(
            Rules.from_dict(d["rules"], schema, source=where),
            schema,
            top_k=int(d["top_k"]),
            unknown_threshold=float(d["unknown_threshold"]),
            overrides={str(g): str(v) for g, v in (d.get("overrides") or {}).items()},
            source=rules_source,
            label_counts=None if counts is None else _counts(counts),
            calibration=None if cal is None else Calibration.from_dict(cal, source=where),
            label_totals=None if totals is None else _counts(totals),
            label_counts_known="priors" in d,
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
            parts.append("divided by the model's training label priors (`priors=False` to turn off)")
        if self.calibration is not None:
            parts.append(f"calibrated: {self.calibration.describe()} (`calibration=False` to turn off)")
        return ("class scores " + "; ".join(parts)) if parts else None


def class_scoring(
    carrier: Carrier | Schema,
    rules: RulesSource | bool | None = None,
    *,
    priors: bool = True,
    calibration: bool = True,
    gamma: float | None = None,
    seen: Sequence[str] | None = None,
    top_k: int | None = None,
    unknown_threshold: float | None = None,
    overrides: Mapping[str, str] | None = None,
    name: str = "the model",
    rules_source: str | None = None,
    warn: Warn | None = None,
) -> ClassScoring | None:
    """The class scoring of a run: the one constructor every caller uses.

    Args:
        carrier: a model card, or a tag file's header: its schema, embedded rules, label
            counts (and totals of multi-label values) and calibration. A bare :class:`Schema`
            carries none of them.
        rules: rules to use (a file, their dict form, :class:`Rules`); None: the carrier's
            when it has any; True: the carrier's, which must exist; False: none.
        priors: divide scores by the carrier's label priors (when it has label counts).
        calibration: apply the carrier's stored calibration when it was chosen for these
            rules and this scoring (else ``warn`` says why not).
        gamma, seen: apply this calibrated-stacking constant instead, to the ``seen`` classes
            (default: the seen classes of the stored calibration).
        top_k, unknown_threshold, overrides: classes listed per record (None:
            :data:`DEFAULT_CLASS_TOP_K`); ``unknown`` below this probability (None: 0);
            interventions (group -> value).
        name, rules_source: the carrier's file name, and where its own rules came from
            (default: ``<name> metadata``), for messages.
        warn: called once with each lint warning of the rules, the reason a stored calibration
            is not applied, and each intervention that changes nothing (default: ignored).

    Returns:
        The scoring, or None when the run has no rules.

    Raises:
        AttrtagError: bad rules ("file:line: ..."), no embedded rules with ``True``, class
            options without rules, contradicting or bad options.
    """
    warn, schema = said_once(warn), carrier if isinstance(carrier, Schema) else carrier.schema
    embedded = None if isinstance(carrier, Schema) else carrier.rules
    if rules is False or (rules is None and embedded is None):
        _refuse_options_without_rules(rules, name, top_k=top_k, unknown_threshold=unknown_threshold,
                                      overrides=overrides, gamma=gamma, seen=seen)
        return None
    counts, totals = _label_priors(carrier, priors)
    loaded, source = _resolved(schema, embedded, rules, name=name, embedded_source=rules_source or f"{name} metadata",
                               label_counts=counts, label_totals=totals, warn=warn)
    stored = None if isinstance(carrier, Schema) or not calibration else carrier.calibration
    cal = _calibration(stored, loaded, calibration, gamma=gamma, seen=seen, priors=counts is not None, name=name,
                       warn=warn)
    scoring = ClassScoring(loaded, schema, top_k=DEFAULT_CLASS_TOP_K if top_k is None else top_k,
                           unknown_threshold=unknown_threshold or 0.0, overrides=dict(overrides or {}), source=source,
                           label_counts=counts, calibration=cal, label_totals=totals)
    _warn_unconstrained(scoring, warn)
    return scoring


def _counts(counts: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
    return {str(g): tuple(int(c) for c in v) for g, v in counts.items()}


def _label_priors(
    carrier: Carrier | Schema, priors: bool
) -> tuple[dict[str, tuple[int, ...]] | None, dict[str, tuple[int, ...]] | None]:
    """The carrier's label counts and multi-label totals; None for what it lacks or with priors off."""
    counts = None if isinstance(carrier, Schema) or not priors else carrier.label_counts
    # getattr: a carrier from before multi-label groups has no totals (and a card without any, None).
    totals = None if counts is None else getattr(carrier, "label_totals", None)
    return (None if counts is None else _counts(counts)), (_counts(totals) if totals else None)


def _resolved(
    schema: Schema, embedded: Any, rules: RulesSource | bool | None, *, name: str, embedded_source: str,
    label_counts: Mapping[str, Sequence[int]] | None, label_totals: Mapping[str, Sequence[int]] | None,
    warn: Warn | None,
) -> tuple[Rules, str]:
    """The rules (given, else embedded) checked against ``schema``, and where they came from."""
    if rules is None or rules is True:
        if embedded is None:
            raise AttrtagError(f"{name}: the model has no embedded rules; pass `rules=R`")
        source = embedded_source
        loaded, warnings = resolve_rules(embedded, schema, source=source, label_counts=label_counts,
                                         label_totals=label_totals)
    else:
        source = str(rules) if isinstance(rules, (str, os.PathLike)) else "rules"
        loaded, warnings = resolve_rules(rules, schema, label_counts=label_counts, label_totals=label_totals)
    for message in warnings:
        (warn or _ignore)(message)
    return loaded, source


def _calibration(
    stored: Calibration | Mapping[str, Any] | None, rules: Rules, enabled: bool, *, gamma: float | None,
    seen: Sequence[str] | None, priors: bool, name: str, warn: Warn | None,
) -> Calibration | None:
    """A hand-given constant, else the stored calibration when it holds for these rules, else none."""
    if seen and gamma is None:
        raise AttrtagError("`seen` names the classes `gamma` applies to; pass `gamma=G` too")
    if gamma is not None:
        if not enabled:
            raise AttrtagError("`gamma=G` and `calibration=False` contradict each other; pass one")
        return given_calibration(gamma, rules, priors=priors, seen=seen, stored=_as_calibration(stored, name),
                                 source=name)
    cal, why = resolve_calibration(stored, rules, priors=priors, source=name)
    if why:
        (warn or _ignore)(why)
    return cal


def _as_calibration(stored: Calibration | Mapping[str, Any] | None, name: str) -> Calibration | None:
    return stored if stored is None or isinstance(stored, Calibration) else Calibration.from_dict(stored, source=name)


def _refuse_options_without_rules(rules: Any, name: str, **options: Any) -> None:
    given = [f"`{'class_top_k' if k == 'top_k' else k}`" for k, v in options.items()
             if v is not None and not (isinstance(v, (Mapping, list, tuple)) and not v)]
    if given:
        why = "`rules=False` was given" if rules is False else f"{name} embeds no rules"
        raise AttrtagError(f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} class rules, but {why}; "
                           "pass `rules=R`")


def _warn_unconstrained(scoring: ClassScoring, warn: Warn | None) -> None:
    """Say so when an intervention names a group no class constrains (it changes nothing)."""
    constrained = {g for r in scoring.rules for g in r.groups}
    for group, value in scoring.overrides.items():
        if group not in constrained:
            (warn or _ignore)(f"`overrides` {group}={value}: no class of {scoring.source or 'the rules'} constrains "
                              f"'{group}', so it changes nothing")


def _ignore(message: str) -> None:
    """The default ``warn``: the caller did not ask to hear about it."""


def said_once(warn: Warn | None) -> Warn:
    """``warn`` that passes each distinct message on once: give one to a whole run (every call
    of it) so that a warning met on every call, chunk or batch is said once."""
    said: set[str] = set()

    def once(message: str) -> None:
        if message not in said:
            said.add(message)
            (warn or _ignore)(message)

    return once


#: What :func:`class_scoring` takes as ``carrier``.
CarrierLike = Union[Carrier, Schema]
