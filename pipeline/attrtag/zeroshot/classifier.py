"""Zero-shot class scores from per-group attribute probabilities (Direct Attribute Prediction).

A class never seen in training is described by its attributes (:mod:`attrtag.zeroshot.rules`)
and recognised from the model's outputs (a softmax per exclusive group, a sigmoid per value of a
multi-label group), after Lampert et al., "Attribute-Based Classification for Zero-Shot Visual
Object Categorization" (TPAMI 2014). The scoring maths (match per group or listed value,
optional attribute priors, mean log match, clipping, softmax) is written out in
``datasets/RULES.md``, and so is calibrated stacking (a constant subtracted from the scores of
the seen classes, see :mod:`attrtag.zeroshot.calibration`).

As open_clip builds its zero-shot classifier once, :class:`ClassScorer` checks the rules and
compiles its terms (:mod:`._terms`: one ``(values, classes)`` weight matrix per constrained
exclusive group, one column per listed multi-label value) when it is built; a call is then one
matrix product per group. Returns a :class:`~attrtag.zeroshot._result.ZeroShotResult`. Pure
numpy: no torch, no I/O.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from ..data.multilabel import UNKNOWN, parse_values
from ..errors import AttrtagError
from ..schema import Group, Schema
from ._result import ZeroShotResult
from ._terms import compile_terms
from .rules import Rules

__all__ = ["DEFAULT_CLASS_TOP_K", "EPS", "ClassScorer", "ZeroShotResult", "apply_overrides", "override_labels",
           "score_classes"]

#: Lower clip of every match probability (and prior mass) before the log.
EPS = 1e-6

#: Classes a result (and a tag record's ``classes``) lists unless told otherwise.
DEFAULT_CLASS_TOP_K = 5

#: How far a row of ``probs`` may sum from 1 (float32 softmax outputs) before we refuse it.
_SUM_TOL = 1e-3


def apply_overrides(
    probs: Mapping[str, np.ndarray], schema: Schema, overrides: Mapping[str, str]
) -> dict[str, np.ndarray]:
    """Replace groups' predicted probabilities with a label ("intervene on an attribute").

    Args:
        probs: group -> ``(N, n_values)`` probabilities; left unchanged.
        schema: gives each group's value order.
        overrides: group -> the value to force, e.g. ``{"bill": "duck"}`` (a one-hot). For a
            multi-label group, a label as a manifest writes it (:func:`override_labels`): its
            values become 1 (present) or 0 (absent), the others keep their prediction. The
            group need not be in ``probs`` when the label leaves no value unknown.

    Returns:
        A new mapping with the overridden groups replaced by ``(N, n_values)`` arrays.

    Raises:
        AttrtagError: empty ``probs``, or an unknown group or value (listing the allowed ones).
    """
    n = _batch_size(probs)
    out = dict(probs)
    for group, value in overrides.items():
        where = f"override '{group}={value}'"
        if group not in schema:
            raise AttrtagError(f"{where}: unknown group '{group}' (groups: {', '.join(schema.names)})")
        g: Group = schema[group]
        if g.multi:
            out[group] = _forced_values(probs.get(group), g, override_labels(g, value, where), n, where)
            continue
        if value not in g.values:
            raise AttrtagError(f"{where}: unknown value '{value}' (allowed: {', '.join(g.values)})")
        one_hot = np.zeros((n, len(g)), dtype=np.float64)
        one_hot[:, g.index(value)] = 1.0
        out[group] = one_hot
    return out


def override_labels(group: Group, value: str, where: str) -> tuple[int, ...]:
    """What an override of multi-label ``group`` forces, per value: 1 present, 0 absent, -1 as predicted.

    ``value`` is written as a manifest cell (``datasets/MANIFEST.md``): ``brown|white`` (these
    present, the others absent), ``[]`` (none present), ``+brown|-red`` (these present or absent,
    the others as predicted).

    Raises:
        AttrtagError: ``where: ...`` naming an unknown value, or a label that forces nothing.
    """
    labels = parse_values(group, value, where)
    if labels is None:
        raise AttrtagError(f"{where}: forces no value of '{group.name}'; write e.g. {group.name}={group.values[0]} "
                           f"(only it present) or {group.name}=+{group.values[0]} (it present, the rest as predicted)")
    return labels


def _forced_values(
    predicted: np.ndarray | None, group: Group, labels: tuple[int, ...], n: int, where: str
) -> np.ndarray:
    """``(N, V)``: the predicted sigmoids with the values ``labels`` knows set to 1 or 0."""
    if predicted is None:
        if UNKNOWN in labels:
            raise AttrtagError(f"{where}: keeps some values of '{group.name}' as predicted, but there is no "
                               f"prediction for it; label every value (e.g. {group.name}=[])")
        predicted = np.zeros((n, len(group)))
    out = np.array(predicted, dtype=np.float64)
    if out.shape != (n, len(group)):
        raise AttrtagError(f"probs['{group.name}']: expected shape {(n, len(group))}, got {out.shape}")
    for i, x in enumerate(labels):
        if x != UNKNOWN:
            out[:, i] = float(x)
    return out


class ClassScorer:
    """Rules + schema (+ priors) compiled once; ``scorer(probs)`` scores a batch of images.

    Args:
        rules: the class rules; checked against ``schema`` here, once.
        schema: the model's schema (value order of each group).
        priors: group -> ``(n_values,)``: an exclusive group's training label frequencies
            (counts are fine; each is normalised to sum to 1), a multi-label group's
            probability of each value being present (in (0, 1), see
            :func:`~attrtag.zeroshot.calibration.priors_from_counts`). When given, every
            constrained group needs one.
        gamma: calibrated stacking: subtracted from the score of every class in ``seen``.
        seen: the classes ``gamma`` applies to (classes of ``rules``).
        eps: lower clip of match probabilities before the log.

    Raises:
        AttrtagError: a class with no constraint, an unknown group or value, bad priors, a
            ``seen`` class the rules do not have.
    """

    def __init__(
        self,
        rules: Rules,
        schema: Schema,
        *,
        priors: Mapping[str, np.ndarray] | None = None,
        gamma: float = 0.0,
        seen: Sequence[str] = (),
        eps: float = EPS,
    ) -> None:
        if len(rules) == 0:
            raise AttrtagError("zero-shot scoring: no classes in the rules")
        if not 0.0 < eps < 1.0:
            raise AttrtagError(f"zero-shot scoring: eps must be in (0, 1), got {eps!r}")
        rules.check(schema)
        rules.require_scorable()
        self.rules, self.schema, self.eps = rules, schema, float(eps)
        #: The constrained groups, in schema order.
        self.groups = tuple(g for g in schema.names if any(g in r.groups for r in rules))
        prior = _checked_priors(priors, schema, self.groups) if priors is not None else None
        self.has_priors = prior is not None
        self._terms = compile_terms(rules, schema, self.groups, prior, self.eps)
        #: What each term is: the last axis of :attr:`ZeroShotResult.terms`.
        self.term_names = tuple(t.name for t in self._terms)
        # How many terms each class has (constrained exclusive groups + listed multi-label
        # values): the divisor of the mean log match.
        self._n_terms = np.zeros(len(rules), dtype=np.float64)
        for t in self._terms:
            self._n_terms[t.classes] += 1
        self.gamma, self.seen, self._offsets = _offsets(rules, gamma, seen)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.rules.names

    def __call__(
        self,
        probs: Mapping[str, np.ndarray],
        *,
        overrides: Mapping[str, str] | None = None,
        unknown_threshold: float = 0.0,
        top_k: int = DEFAULT_CLASS_TOP_K,
        temperature: float = 1.0,
    ) -> ZeroShotResult:
        """Score every class for every image.

        Args:
            probs: group -> ``(N, n_values)`` probabilities, columns in schema value order: an
                exclusive group's softmax, a multi-label group's sigmoids. Every constrained
                group must be present.
            overrides: group -> value to force before scoring (see :func:`apply_overrides`).
            unknown_threshold: flag an image ``unknown`` when its best normalised probability
                is below this (0 never flags).
            top_k: how many classes :attr:`ZeroShotResult.top_k` keeps (capped at the class count).
            temperature: softmax temperature for the normalised probabilities (> 0).

        Returns:
            A :class:`ZeroShotResult`.
        """
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise AttrtagError(f"score_classes: top_k must be an integer >= 1, got {top_k!r}")
        if not (np.isfinite(temperature) and temperature > 0):
            raise AttrtagError(f"score_classes: temperature must be > 0, got {temperature!r}")
        if not 0.0 <= unknown_threshold <= 1.0:
            raise AttrtagError(f"score_classes: unknown_threshold must be in [0, 1], got {unknown_threshold!r}")
        if overrides:
            probs = apply_overrides(probs, self.schema, overrides)
        p = _checked_probs(probs, self.schema, self.groups)
        n = _batch_size(p)
        terms = np.full((n, len(self.rules), len(self._terms)), np.nan)  # (N, C, T)
        for j, t in enumerate(self._terms):
            terms[:, t.classes, j] = t.log_match(p[t.group], self.eps)  # (N, Cg), or (N, 1) for every class
        scores = np.nansum(terms, axis=2) / self._n_terms + self._offsets  # (N, C): mean log match (calibrated)
        z = scores / temperature
        z = z - z.max(axis=1, keepdims=True)  # exp stays finite
        e = np.exp(z)
        class_probs = e / e.sum(axis=1, keepdims=True)
        ranking = np.argsort(-scores, axis=1, kind="stable")  # stable: ties keep rule order
        return ZeroShotResult(
            class_names=self.rules.names,
            term_names=self.term_names,
            scores=scores,
            probs=class_probs,
            ranking=ranking,
            terms=terms,
            unknown=class_probs.max(axis=1) < unknown_threshold,
            k=min(top_k, len(self.rules)),
            offsets=self._offsets,
        )


def score_classes(
    probs: Mapping[str, np.ndarray],
    rules: Rules,
    schema: Schema,
    *,
    priors: Mapping[str, np.ndarray] | None = None,
    overrides: Mapping[str, str] | None = None,
    unknown_threshold: float = 0.0,
    top_k: int = DEFAULT_CLASS_TOP_K,
    temperature: float = 1.0,
    eps: float = EPS,
) -> ZeroShotResult:
    """One-shot form of :class:`ClassScorer`: compile the rules and score ``probs`` once.

    Build a :class:`ClassScorer` instead when scoring many batches with the same rules.
    """
    scorer = ClassScorer(rules, schema, priors=priors, eps=eps)
    return scorer(probs, overrides=overrides, unknown_threshold=unknown_threshold, top_k=top_k, temperature=temperature)


def _batch_size(probs: Mapping[str, np.ndarray]) -> int:
    """Rows of the first array in ``probs``; fails fast on no groups or no images."""
    if not probs:
        raise AttrtagError("zero-shot scoring: no group probabilities given (empty input)")
    first = next(iter(probs))
    shape = np.shape(probs[first])
    if len(shape) != 2 or shape[0] == 0:
        raise AttrtagError(
            f"probs['{first}']: expected shape (N, n_values) with N >= 1, got {shape} (empty input?)"
        )
    return int(shape[0])


def _group_arrays(
    given: Mapping[str, np.ndarray], schema: Schema, needed: tuple[str, ...], *, what: str, missing: str,
    shape: Callable[[str], tuple[int, ...]],
) -> dict[str, np.ndarray]:
    """float64 copies of the ``needed`` groups of ``given``, after checking names and shapes.

    ``what`` names the argument in messages, ``missing`` says how to fix an absent group.
    """
    for name in given:
        if name not in schema:
            raise AttrtagError(f"{what}: unknown group '{name}' (schema groups: {', '.join(schema.names)})")
    out = {}
    for name in needed:
        if name not in given:
            raise AttrtagError(f"{what}: group '{name}' is constrained by the rules but {missing.format(name=name)}")
        a = np.asarray(given[name], dtype=np.float64)
        if a.shape != shape(name):
            raise AttrtagError(f"{what}['{name}']: expected shape {shape(name)}, got {a.shape}")
        out[name] = a
    return out


def _checked_probs(
    probs: Mapping[str, np.ndarray], schema: Schema, needed: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """float64 copies of ``probs`` after checking groups, shapes and values: an exclusive group's
    rows are distributions, a multi-label group's entries probabilities."""
    n = _batch_size(probs)
    out = _group_arrays(
        probs, schema, needed, what="probs", shape=lambda g: (n, len(schema[g])),
        missing="missing; pass the model's probabilities for it (or override it)",
    )
    for name, a in out.items():
        if not np.all(np.isfinite(a)):
            raise AttrtagError(f"probs['{name}']: contains NaN or inf")
        if schema[name].multi:
            if a.min() < -_SUM_TOL or a.max() > 1 + _SUM_TOL:
                raise AttrtagError(
                    f"probs['{name}']: a multi-label group's entries must be probabilities in [0, 1] (one "
                    f"sigmoid per value), got values in [{a.min():.4g}, {a.max():.4g}]; pass the sigmoid of "
                    "its logits, not the logits"
                )
            continue
        sums = a.sum(axis=1)
        if a.min() < -_SUM_TOL or a.max() > 1 + _SUM_TOL or np.abs(sums - 1).max() > _SUM_TOL:
            row = int(np.abs(sums - 1).argmax())
            raise AttrtagError(
                f"probs['{name}']: rows must be probability distributions (row {row} sums to "
                f"{sums[row]:.4g}, values in [{a.min():.4g}, {a.max():.4g}]); pass the softmax of "
                "each group's logits, not the logits"
            )
    return out


def _checked_priors(
    priors: Mapping[str, np.ndarray], schema: Schema, needed: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """Each needed group's prior, checked; an exclusive group's normalised to sum to 1."""
    out = _group_arrays(
        priors, schema, needed, what="priors", shape=lambda g: (len(schema[g]),),
        missing="has no prior; pass its training frequencies (or uniform ones: np.ones(n_values))",
    )
    for name, a in out.items():
        if schema[name].multi:
            if not (np.all(np.isfinite(a)) and a.min() > 0 and a.max() < 1):
                raise AttrtagError(
                    f"priors['{name}']: a multi-label group's prior is each value's probability of being present, "
                    f"strictly between 0 and 1 (from the label counts and the images each value is known in, "
                    f"label_totals), got {a.tolist()}; without label_totals, score without priors (`priors=False`)"
                )
            continue
        if not np.all(np.isfinite(a)) or a.min() < 0 or a.sum() <= 0:
            raise AttrtagError(f"priors['{name}']: frequencies must be finite, >= 0 and not all 0, got {a.tolist()}")
        out[name] = a / a.sum()
    return out


def _offsets(rules: Rules, gamma: float, seen: Sequence[str]) -> tuple[float, tuple[str, ...], np.ndarray]:
    """``(gamma, seen, (C,) offsets)`` of calibrated stacking: ``-gamma`` on the seen classes."""
    if not np.isfinite(gamma):
        raise AttrtagError(f"zero-shot scoring: gamma must be a finite number, got {gamma!r}")
    unknown = [c for c in seen if c not in rules.names]
    if unknown:
        raise AttrtagError(
            f"calibration: seen classes {', '.join(unknown)} are not classes of the rules ({', '.join(rules.names)})"
        )
    return float(gamma), tuple(seen), np.array([-float(gamma) if c in seen else 0.0 for c in rules.names])
