"""The thresholds of a tagging run: when an exclusive group is uncertain, when a multi-label value is present.

One argument carries both, as ``attrtag tag --threshold`` does: a number, or a mapping of

* ``"*"``: the uncertainty threshold of every exclusive group not named;
* an exclusive group: its uncertainty threshold (below it, the group is listed in ``uncertain``);
* a multi-label group: the decision threshold of every one of its values;
* ``"GROUP.VALUE"``: one multi-label value's decision threshold.

Values not named keep the thresholds the model card carries (chosen on the val split), else
:data:`attrtag.card.DEFAULT_THRESHOLD`.
"""
from __future__ import annotations

from typing import Mapping, Union

from ..card import DEFAULT_THRESHOLD
from ..errors import AttrtagError
from ..schema import Schema

#: A threshold for every exclusive group, or per group and multi-label value.
Thresholds = Union[float, Mapping[str, float]]


def split_thresholds(
    thresholds: Thresholds | None, schema: Schema, chosen: Mapping[str, tuple[float, ...]] | None = None,
) -> tuple[dict[str, float], dict[str, tuple[float, ...]]]:
    """``(uncertainty thresholds of exclusive groups, decision thresholds of multi-label values)``.

    Args:
        thresholds: what the run was given (see the module docstring).
        schema: the model's schema.
        chosen: the card's decision thresholds (``ModelCard.decision_thresholds``).

    Raises:
        AttrtagError: a group or value the model lacks, or a number that is not a probability.
    """
    given = {"*": thresholds} if isinstance(thresholds, (int, float)) else dict(thresholds or {})
    values = {g: list(ts) for g, ts in (chosen or {}).items()}
    values.update({g.name: values.get(g.name) or [DEFAULT_THRESHOLD] * len(g) for g in schema.multi})
    uncertain: dict[str, float] = {}
    targets = [(key, float(t), *_target(key, schema)) for key, t in given.items() if _probability(key, t)]
    # A value's own threshold wins over its group's, whichever was given first (as GROUP=P over P).
    for _, t, group, value in sorted(targets, key=lambda x: x[3] is not None):
        if value is not None:
            values[group][schema[group].index(value)] = t
        elif group in values:
            values[group] = [t] * len(schema[group])
        elif group != "*":
            uncertain[group] = t
    default = given.get("*")
    ordered = {g.name: uncertain.get(g.name, default) for g in schema if not g.multi}
    return ({g: t for g, t in ordered.items() if t is not None}, {g: tuple(ts) for g, ts in values.items()})


def _probability(key: str, t: object) -> bool:
    if not (isinstance(t, (int, float)) and not isinstance(t, bool) and 0.0 <= t <= 1.0):
        shown = t if key == "*" else f"{key}={t}"  # "*" is P alone (every exclusive group)
        raise AttrtagError(f"`thresholds` {shown}: a threshold is a probability between 0 and 1")
    return True


def _target(key: str, schema: Schema) -> tuple[str, str | None]:
    """``(group, value or None)`` named by a key; the group of ``GROUP.VALUE`` must be multi-label."""
    if key == "*" or key in schema:
        return key, None
    for g in schema.multi:
        if key.startswith(g.name + ".") and key[len(g.name) + 1:] in g.values:
            return g.name, key[len(g.name) + 1:]
    group, _, value = key.partition(".")
    if group in schema and not schema[group].multi:
        raise AttrtagError(f"`thresholds` {key}: '{group}' is an exclusive group, whose threshold is one "
                           f"number for the group ({group}=P: below it the group is uncertain), not one per value")
    if group in schema:
        raise AttrtagError(f"`thresholds` {key}: the multi-label group '{group}' has no value '{value}' "
                           f"(values: {', '.join(schema[group].values)})")
    names = ", ".join(schema.names)
    raise AttrtagError(f"`thresholds` {key}: the model has no group '{key}' (groups: {names}; a multi-label "
                       "value is GROUP.VALUE)")
