"""One class's rule: the values it accepts in each exclusive group, has or lacks in each multi-label one.

:class:`Constraint` and :class:`Rule` check themselves when built; :mod:`.rules` reads them
from a file or a dict and holds them in order as :class:`~attrtag.zeroshot.rules.Rules`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import SchemaError


@dataclass(frozen=True)
class Constraint:
    """What a class says about one group.

    In an exclusive group, ``values`` are the acceptable values (any one of them), weighted. In
    a multi-label group, every one of ``values`` is present and every one of ``absent`` absent
    (weights 1). The schema says which kind a group is; :meth:`Rules.check
    <attrtag.zeroshot.rules.Rules.check>` refuses a form the group's kind does not take.

    Attributes:
        group: the attribute group.
        values: acceptable (exclusive) or present (multi-label) values, in the order written.
        weights: one positive weight per value (1.0 each for a single value or a list).
        where: "file:line" of the group key, for messages (not part of equality).
        value_where: "file:line" of each value, for messages (not part of equality).
        absent: values marked absent (a multi-label group only).
        marked: written as ``{value: true|false}``, the form only a multi-label group takes
            (not part of equality: ``{a: true}`` scores as ``[a]``).
        absent_where: "file:line" of each absent value, for messages (not part of equality).
    """

    group: str
    values: tuple[str, ...]
    weights: tuple[float, ...]
    where: str = field(default="", compare=False, repr=False)
    value_where: tuple[str, ...] = field(default=(), compare=False, repr=False)
    absent: tuple[str, ...] = ()
    marked: bool = field(default=False, compare=False, repr=False)
    absent_where: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        loc = self.where or "rules"
        if not self.values and not self.absent:
            raise SchemaError(f"{loc}: group '{self.group}' lists no values; name at least one")
        if len(self.weights) != len(self.values):
            raise SchemaError(
                f"{loc}: group '{self.group}' has {len(self.values)} values but {len(self.weights)} weights"
            )
        for v, w in zip(self.values, self.weights):
            if not (math.isfinite(w) and w > 0):
                raise SchemaError(f"{loc}: group '{self.group}': weight of '{v}' is {w}; weights must be > 0")
        for listed in (self.values, self.absent):
            if len(set(listed)) != len(listed):
                dup = next(v for v in listed if listed.count(v) > 1)
                raise SchemaError(f"{loc}: group '{self.group}' lists value '{dup}' twice")
        both = [v for v in self.values if v in self.absent]
        if both:
            raise SchemaError(f"{loc}: group '{self.group}' marks value '{both[0]}' both present and absent; keep one")

    @property
    def normalised_weights(self) -> tuple[float, ...]:
        """Weights divided by their maximum, so the preferred value counts fully (weight 1).

        Max- rather than sum-normalisation keeps a list equal to "the probability mass on any of
        these values": ``[spots, stripes]`` and ``{spots: 1, stripes: 1}`` both score
        P(spots) + P(stripes), and a class is not penalised for accepting more than one value.
        """
        top = max(self.weights, default=1.0)
        return tuple(w / top for w in self.weights)

    def signature(self) -> tuple[str, tuple[tuple[str, float], ...], tuple[str, ...]]:
        """Order-free identity of what this constraint scores (group, sorted value/weight pairs,
        sorted absent values)."""
        # Rounded so that {a: 3, b: 7} and {a: 0.3, b: 0.7} compare equal despite float error.
        pairs = tuple(sorted((v, round(w, 9)) for v, w in zip(self.values, self.normalised_weights)))
        return self.group, pairs, tuple(sorted(self.absent))


@dataclass(frozen=True)
class Rule:
    """One class: its name and its constraints (at most one per group)."""

    name: str
    constraints: tuple[Constraint, ...]
    where: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        groups = [c.group for c in self.constraints]
        for c in self.constraints:
            if groups.count(c.group) > 1:
                raise SchemaError(f"{c.where or 'rules'}: class '{self.name}' constrains group '{c.group}' twice")

    @property
    def groups(self) -> tuple[str, ...]:
        """Names of the constrained groups, in the order written."""
        return tuple(c.group for c in self.constraints)

    def signature(self) -> tuple[tuple[str, tuple[tuple[str, float], ...], tuple[str, ...]], ...]:
        """Order-free identity of the class's rules; equal signatures score identically."""
        return tuple(sorted(c.signature() for c in self.constraints))


def unscorable_message(rule: Rule) -> str:
    """The one wording of "this class constrains no group", for lint warnings and errors."""
    return f"{rule.where or 'rules'}: class '{rule.name}' constrains no group; it cannot be scored"


def term_name(group: str, value: str, present: bool) -> str:
    """How a multi-label value in one state is named in explanations and messages: ``g=v`` (present)
    or ``g!=v`` (absent)."""
    return f"{group}={value}" if present else f"{group}!={value}"
