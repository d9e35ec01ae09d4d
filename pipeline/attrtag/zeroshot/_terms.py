"""The columns a class scorer computes: one per constrained exclusive group, one per listed
multi-label value and state.

* An **exclusive group** a class constrains is one term: the log of the probability mass on the
  values it accepts, ``log sum_v w_v P(g = v)`` (minus the log prior mass with priors).
* A **multi-label value** a class lists is one binary attribute, as in DAP over binary
  attributes (Lampert et al., TPAMI 2014): ``log P(v present)`` when listed present,
  ``log (1 - P(v present))`` when listed absent (minus the log prior of that state). Values a
  class does not list are unconstrained.

A class's score is the mean of its terms (``datasets/RULES.md``). Every column is compiled once,
when the scorer is built; a call is one matrix product per exclusive group and one slice per
multi-label value. Pure numpy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Union

import numpy as np

from ..errors import AttrtagError
from ..schema import Group, Schema
from ._rule import term_name
from .rules import Rules


@dataclass(frozen=True, eq=False)
class GroupTerm:
    """One exclusive group: its ``(V, Cg)`` max-normalised weights of the ``Cg`` classes that
    constrain it, their column indices and the log prior mass each subtracts (zeros without priors)."""

    group: str
    weights: np.ndarray
    classes: np.ndarray
    log_prior: np.ndarray

    @property
    def name(self) -> str:
        return self.group

    def log_match(self, p: np.ndarray, eps: float) -> np.ndarray:
        """``(N, Cg)`` from the group's ``(N, V)`` softmax: the log mass on each class's values."""
        return np.log(np.clip(p @ self.weights, eps, 1.0)) - self.log_prior


@dataclass(frozen=True, eq=False)
class ValueTerm:
    """One value of a multi-label group in one state, and the classes that list it so."""

    group: str
    value: str
    index: int
    present: bool
    classes: np.ndarray
    log_prior: float = 0.0

    @property
    def name(self) -> str:
        """``g=v`` (listed present) or ``g!=v`` (listed absent)."""
        return term_name(self.group, self.value, self.present)

    def log_match(self, p: np.ndarray, eps: float) -> np.ndarray:
        """``(N, 1)`` from the group's ``(N, V)`` sigmoids: the same term for every class listing it."""
        q = p[:, self.index] if self.present else 1.0 - p[:, self.index]
        return (np.log(np.clip(q, eps, 1.0)) - self.log_prior)[:, None]


Term = Union[GroupTerm, ValueTerm]


def compile_terms(
    rules: Rules, schema: Schema, groups: tuple[str, ...], prior: Mapping[str, np.ndarray] | None, eps: float
) -> list[Term]:
    """Every column, in schema order of ``groups`` (a multi-label group's in value order, present
    before absent).

    Args:
        prior: checked priors (an exclusive group's sum to 1; a multi-label group's are each
            value's probability of being present), or None.

    Raises:
        AttrtagError: a class whose accepted values all have prior 0 in an exclusive group.
    """
    out: list[Term] = []
    for name in groups:
        group, p = schema[name], None if prior is None else prior[name]
        out += _value_terms(rules, group, p, eps) if group.multi else [_group_term(rules, group, p, eps)]
    return out


def _group_term(rules: Rules, group: Group, prior: np.ndarray | None, eps: float) -> GroupTerm:
    weights, mask = _weight_matrix(rules, group)  # (C, V), (C,)
    w = weights[mask]  # (Cg, V)
    log_prior = np.zeros(len(w))
    if prior is not None:
        prior_mass = w @ prior  # (Cg,)
        for c, m in zip(np.flatnonzero(mask), prior_mass):
            if m <= 0:
                raise AttrtagError(
                    f"priors['{group.name}']: every value class '{rules.classes[c].name}' accepts has "
                    "frequency 0, so dividing by it would let this class win everywhere; smooth "
                    "the frequencies (e.g. add 1 to every count)"
                )
        log_prior = np.log(np.clip(prior_mass, eps, 1.0))
    return GroupTerm(group.name, np.ascontiguousarray(w.T), np.flatnonzero(mask), log_prior)


def _value_terms(rules: Rules, group: Group, prior: np.ndarray | None, eps: float) -> list[ValueTerm]:
    out = []
    for i, v in enumerate(group.values):
        for present in (True, False):
            classes = [c for c, r in enumerate(rules) for con in r.constraints
                       if con.group == group.name and v in (con.values if present else con.absent)]
            if classes:
                state = None if prior is None else (prior[i] if present else 1.0 - prior[i])
                log_prior = 0.0 if state is None else float(np.log(np.clip(state, eps, 1.0)))
                out.append(ValueTerm(group.name, v, i, present, np.array(classes), log_prior))
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
