"""Zero-shot class scores from per-group attribute probabilities (Direct Attribute Prediction).

A class never seen in training is described by its attributes (:mod:`attrtag.zeroshot.rules`)
and recognised from the model's per-group softmax outputs, after Lampert et al.,
"Attribute-Based Classification for Zero-Shot Visual Object Categorization" (TPAMI 2014). The
scoring maths (match per group, optional attribute priors, mean log match, clipping, softmax)
is written out in ``datasets/RULES.md``, and so is calibrated stacking (a constant subtracted
from the scores of the seen classes, see :mod:`attrtag.zeroshot.calibration`).

As open_clip builds its zero-shot classifier once, :class:`ClassScorer` checks the rules and
compiles one ``(values, classes)`` weight matrix per constrained group when it is built; a call
is then one matrix product per group. Pure numpy: no torch, no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from ..errors import AttrtagError
from ..schema import Group, Schema
from .rules import Rules

#: Lower clip of every match probability (and prior mass) before the log.
EPS = 1e-6

#: Classes a result (and a tag record's ``classes``) lists unless told otherwise.
DEFAULT_CLASS_TOP_K = 5

#: How far a row of ``probs`` may sum from 1 (float32 softmax outputs) before we refuse it.
_SUM_TOL = 1e-3


@dataclass(frozen=True, eq=False)
class ZeroShotResult:
    """Zero-shot scores for ``N`` images and ``C`` classes.

    Attributes:
        class_names: class names, in rule order (the column order of every array).
        group_names: the constrained groups, in schema order (the last axis of ``terms``).
        scores: ``(N, C)`` mean log match over each class's constrained groups, plus ``offsets``.
        probs: ``(N, C)`` ``softmax(scores / temperature)``.
        ranking: ``(N, C)`` class indices, best first.
        terms: ``(N, C, G)`` per-group log match (minus log prior mass when priors are given),
            NaN where the class does not constrain the group.
        unknown: ``(N,)`` True where the best normalised probability is below the threshold.
        k: how many classes :attr:`top_k` keeps.
        offsets: ``(C,)`` added to each class's score: ``-gamma`` for seen classes under
            calibrated stacking, 0 otherwise.
    """

    class_names: tuple[str, ...]
    group_names: tuple[str, ...]
    scores: np.ndarray
    probs: np.ndarray
    ranking: np.ndarray
    terms: np.ndarray
    unknown: np.ndarray
    k: int
    offsets: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @property
    def top1(self) -> np.ndarray:
        """``(N,)`` index of the best class (also where ``unknown`` is set)."""
        return self.ranking[:, 0]

    @property
    def top_k(self) -> np.ndarray:
        """``(N, k)`` indices of the ``k`` best classes, best first."""
        return self.ranking[:, : self.k]

    @property
    def top_k_probs(self) -> np.ndarray:
        """``(N, k)`` normalised probabilities of :attr:`top_k`."""
        return np.take_along_axis(self.probs, self.top_k, axis=1)

    @property
    def predicted(self) -> tuple[str | None, ...]:
        """Best class name per image, ``None`` where the image is ``unknown``."""
        return tuple(None if u else self.class_names[c] for c, u in zip(self.top1, self.unknown))

    def ranked_names(self, i: int) -> tuple[str, ...]:
        """All class names for image ``i``, best first."""
        return tuple(self.class_names[c] for c in self.ranking[i])

    def top_k_names(self, i: int) -> list[tuple[str, float]]:
        """``[(class, probability), ...]`` of the ``k`` best classes for image ``i``."""
        return [(self.class_names[c], float(self.probs[i, c])) for c in self.top_k[i]]

    def explain(self, i: int, class_index: int | None = None) -> dict[str, float]:
        """Each constrained group's contribution to one class's score for image ``i``.

        Args:
            i: image index.
            class_index: the class (default: the best one for this image).

        Returns:
            ``{group: term / n_constrained}`` in schema order; the values add up to
            ``scores[i, class_index]`` minus the class's calibration offset. The most negative
            entry is the attribute that argues most against the class.
        """
        c = int(self.ranking[i, 0]) if class_index is None else class_index
        row = self.terms[i, c]
        n = int(np.count_nonzero(~np.isnan(row)))
        return {g: float(t) / n for g, t in zip(self.group_names, row) if not np.isnan(t)}

    @property
    def explanations(self) -> tuple[dict[str, float], ...]:
        """:meth:`explain` of the best class, for every image."""
        return tuple(self.explain(i) for i in range(len(self)))


def apply_overrides(
    probs: Mapping[str, np.ndarray], schema: Schema, overrides: Mapping[str, str]
) -> dict[str, np.ndarray]:
    """Replace groups' predicted distributions with one-hots ("intervene on an attribute").

    Args:
        probs: group -> ``(N, n_values)`` probabilities; left unchanged.
        schema: gives each group's value order.
        overrides: group -> the value to force, e.g. ``{"bill": "duck"}``. The group need not
            be in ``probs`` (e.g. one the model does not predict).

    Returns:
        A new mapping with the overridden groups replaced by ``(N, n_values)`` one-hots.

    Raises:
        AttrtagError: empty ``probs``, or an unknown group or value (listing the allowed ones).
    """
    n = _batch_size(probs)
    out = dict(probs)
    for group, value in overrides.items():
        if group not in schema:
            raise AttrtagError(
                f"override '{group}={value}': unknown group '{group}' (groups: {', '.join(schema.names)})"
            )
        g: Group = schema[group]
        if value not in g.values:
            raise AttrtagError(
                f"override '{group}={value}': unknown value '{value}' (allowed: {', '.join(g.values)})"
            )
        one_hot = np.zeros((n, len(g)), dtype=np.float64)
        one_hot[:, g.index(value)] = 1.0
        out[group] = one_hot
    return out


class ClassScorer:
    """Rules + schema (+ priors) compiled once; ``scorer(probs)`` scores a batch of images.

    Args:
        rules: the class rules; checked against ``schema`` here, once.
        schema: the model's schema (value order of each group).
        priors: group -> ``(n_values,)`` training label frequencies (counts are fine; each is
            normalised to sum to 1). When given, every constrained group needs one.
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
        #: The constrained groups, in schema order (the last axis of ``terms``).
        self.groups = tuple(g for g in schema.names if any(g in r.groups for r in rules))
        prior = _checked_priors(priors, schema, self.groups) if priors is not None else None
        self.has_priors = prior is not None
        # Per group: (V, Cg) weights of the classes that constrain it, their column indices,
        # and the log prior mass each of them subtracts (zeros without priors).
        self._compiled: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []
        for name in self.groups:
            weights, mask = _weight_matrix(rules, schema[name])  # (C, V), (C,)
            w = weights[mask]  # (Cg, V)
            log_prior = np.zeros(len(w))
            if prior is not None:
                prior_mass = w @ prior[name]  # (Cg,)
                for c, m in zip(np.flatnonzero(mask), prior_mass):
                    if m <= 0:
                        raise AttrtagError(
                            f"priors['{name}']: every value class '{rules.classes[c].name}' accepts has "
                            "frequency 0, so dividing by it would let this class win everywhere; smooth "
                            "the frequencies (e.g. add 1 to every count)"
                        )
                log_prior = np.log(np.clip(prior_mass, eps, 1.0))
            self._compiled.append((name, np.ascontiguousarray(w.T), np.flatnonzero(mask), log_prior))
        # How many groups each class constrains: the divisor of the mean log match.
        self._n_constrained = np.array([len(r.constraints) for r in rules], dtype=np.float64)
        if not np.isfinite(gamma):
            raise AttrtagError(f"zero-shot scoring: gamma must be a finite number, got {gamma!r}")
        unknown = [c for c in seen if c not in rules.names]
        if unknown:
            raise AttrtagError(
                f"calibration: seen classes {', '.join(unknown)} are not classes of the rules ({', '.join(rules.names)})"
            )
        self.gamma, self.seen = float(gamma), tuple(seen)
        self._offsets = np.array([-self.gamma if c in self.seen else 0.0 for c in rules.names])  # (C,)

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
            probs: group -> ``(N, n_values)`` softmax probabilities, columns in schema value
                order. Every constrained group must be present.
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
        terms = np.full((n, len(self.rules), len(self.groups)), np.nan)  # (N, C, G)
        for j, (name, w_t, classes, log_prior) in enumerate(self._compiled):
            # (N, V) @ (V, Cg): the probability mass on each class's acceptable values.
            terms[:, classes, j] = np.log(np.clip(p[name] @ w_t, self.eps, 1.0)) - log_prior
        scores = np.nansum(terms, axis=2) / self._n_constrained + self._offsets  # (N, C): mean log match (calibrated)
        z = scores / temperature
        z = z - z.max(axis=1, keepdims=True)  # exp stays finite
        e = np.exp(z)
        class_probs = e / e.sum(axis=1, keepdims=True)
        ranking = np.argsort(-scores, axis=1, kind="stable")  # stable: ties keep rule order
        return ZeroShotResult(
            class_names=self.rules.names,
            group_names=self.groups,
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
    """float64 copies of ``probs`` after checking groups, shapes and that rows are distributions."""
    n = _batch_size(probs)
    out = _group_arrays(
        probs, schema, needed, what="probs", shape=lambda g: (n, len(schema[g])),
        missing="missing; pass the model's softmax for it (or override it)",
    )
    for name, a in out.items():
        if not np.all(np.isfinite(a)):
            raise AttrtagError(f"probs['{name}']: contains NaN or inf")
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
    """Each needed group's prior, checked and normalised to sum to 1."""
    out = _group_arrays(
        priors, schema, needed, what="priors", shape=lambda g: (len(schema[g]),),
        missing="has no prior; pass its training frequencies (or uniform ones: np.ones(n_values))",
    )
    for name, a in out.items():
        if not np.all(np.isfinite(a)) or a.min() < 0 or a.sum() <= 0:
            raise AttrtagError(f"priors['{name}']: frequencies must be finite, >= 0 and not all 0, got {a.tolist()}")
        out[name] = a / a.sum()
    return out


def _weight_matrix(rules: Rules, group: Group) -> tuple[np.ndarray, np.ndarray]:
    """``(C, n_values)`` max-normalised weights of each class on ``group`` and the ``(C,)`` mask
    of classes that constrain it (rows of the others are zero)."""
    weights = np.zeros((len(rules), len(group)), dtype=np.float64)
    mask = np.zeros(len(rules), dtype=bool)
    for c, rule in enumerate(rules):
        for con in rule.constraints:
            if con.group == group.name:
                mask[c] = True
                for v, w in zip(con.values, con.normalised_weights):
                    weights[c, group.index(v)] = w
    return weights, mask
