"""One class's rule: the values it accepts in each group it constrains.

:class:`Constraint` and :class:`Rule` check themselves when built; :mod:`.rules` reads them
from a file or a dict and holds them in order as :class:`~attrtag.zeroshot.rules.Rules`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import SchemaError


@dataclass(frozen=True)
class Constraint:
    """The values a class accepts in one group.

    Attributes:
        group: the attribute group.
        values: acceptable values, in the order written.
        weights: one positive weight per value (1.0 each for a single value or a list).
        where: "file:line" of the group key, for messages (not part of equality).
        value_where: "file:line" of each value, for messages (not part of equality).
    """

    group: str
    values: tuple[str, ...]
    weights: tuple[float, ...]
    where: str = field(default="", compare=False, repr=False)
    value_where: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        loc = self.where or "rules"
        if not self.values:
            raise SchemaError(f"{loc}: group '{self.group}' lists no values; name at least one")
        if len(self.weights) != len(self.values):
            raise SchemaError(
                f"{loc}: group '{self.group}' has {len(self.values)} values but {len(self.weights)} weights"
            )
        for v, w in zip(self.values, self.weights):
            if not (math.isfinite(w) and w > 0):
                raise SchemaError(f"{loc}: group '{self.group}': weight of '{v}' is {w}; weights must be > 0")
        if len(set(self.values)) != len(self.values):
            dup = next(v for v in self.values if self.values.count(v) > 1)
            raise SchemaError(f"{loc}: group '{self.group}' lists value '{dup}' twice")

    @property
    def normalised_weights(self) -> tuple[float, ...]:
        """Weights divided by their maximum, so the preferred value counts fully (weight 1).

        Max- rather than sum-normalisation keeps a list equal to "the probability mass on any of
        these values": ``[spots, stripes]`` and ``{spots: 1, stripes: 1}`` both score
        P(spots) + P(stripes), and a class is not penalised for accepting more than one value.
        """
        top = max(self.weights)
        return tuple(w / top for w in self.weights)

    def signature(self) -> tuple[str, tuple[tuple[str, float], ...]]:
        """Order-free identity of what this constraint scores (group, sorted value/weight pairs)."""
        # Rounded so that {a: 3, b: 7} and {a: 0.3, b: 0.7} compare equal despite float error.
        return self.group, tuple(sorted((v, round(w, 9)) for v, w in zip(self.values, self.normalised_weights)))


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

    def signature(self) -> tuple[tuple[str, tuple[tuple[str, float], ...]], ...]:
        """Order-free identity of the class's rules; equal signatures score identically."""
        return tuple(sorted(c.signature() for c in self.constraints))


def unscorable_message(rule: Rule) -> str:
    """The one wording of "this class constrains no group", for lint warnings and errors."""
    return f"{rule.where or 'rules'}: class '{rule.name}' constrains no group; it cannot be scored"
