"""One ``group: spec`` entry of a class rule, read into a :class:`~attrtag.zeroshot._rule.Constraint`.

The forms (``datasets/RULES.md``): one value, a list of values, ``{value: weight}`` (an exclusive
group) or ``{value: true|false}`` (a multi-label group: present or absent). Whether a group is
multi-label comes from the schema when the caller has one; without it both mapping forms are
read and :meth:`Rules.check <attrtag.zeroshot.rules.Rules.check>` refuses the wrong one later.
Every error names the file and line (or the source and key path) and the fix.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

from ..errors import SchemaError
from ._rule import Constraint

#: The words a multi-label value's state may be written with: what YAML 1.1 reads as booleans
#: (rules files keep scalars as written, so ``no`` stays the string), and JSON's booleans.
STATE_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}

_Locator = Callable[..., str]


def parse_constraint(cls_name: str, group: str, spec: Any, locate: _Locator, *, multi: bool | None) -> Constraint:
    """One ``group: spec`` entry of class ``cls_name``.

    Args:
        multi: whether ``group`` is multi-label (from the schema), None when unknown.
    """

    def at(*keys: Any) -> str:
        return locate("classes", cls_name, group, *keys)

    where = at()
    ctx = f"class '{cls_name}', group '{group}'"
    if isinstance(spec, str):
        return Constraint(group, (spec,), (1.0,), where=where, value_where=(where,))
    if isinstance(spec, list):
        if not spec:
            raise SchemaError(f"{where}: {ctx}: empty list; name at least one value or drop the group")
        wheres = [at(i) for i in range(len(spec))]
        for v, w in zip(spec, wheres):
            if not isinstance(v, str):
                raise SchemaError(f"{w}: {ctx}: value {v!r} must be a plain name")
        _no_duplicates(spec, wheres, ctx)
        return Constraint(group, tuple(spec), (1.0,) * len(spec), where=where, value_where=tuple(wheres))
    if isinstance(spec, Mapping):
        if not spec:
            form = "{value: true|false}" if multi else "{value: weight}"
            raise SchemaError(f"{where}: {ctx}: empty mapping; give {form} pairs or drop the group")
        for v in spec:
            if not isinstance(v, str):
                raise SchemaError(f"{at(v)}: {ctx}: value {v!r} must be a plain name")
        if _is_marked(spec, at, ctx, multi):
            return _marked(group, spec, where, at)
        return _weighted(group, spec, where, at, ctx)
    raise SchemaError(f"{where}: {ctx}: expected a value, a list of values, {{value: weight}} or "
                      f"{{value: true|false}}; got {spec!r}")


def parse_state(raw: Any) -> bool | None:
    """True (present) or False (absent) for a state word or a JSON boolean; None for anything else."""
    if isinstance(raw, bool):
        return raw
    return STATE_WORDS.get(raw.strip().lower()) if isinstance(raw, str) else None


def _is_marked(spec: Mapping[str, Any], at: Callable[..., str], ctx: str, multi: bool | None) -> bool:
    """Whether a mapping marks values present/absent (else it weights them); refuses mixtures
    and the form the group's kind does not take."""
    states = {v: parse_state(raw) for v, raw in spec.items()}
    if multi:
        for v, s in states.items():
            if s is None:
                raise SchemaError(
                    f"{at(v)}: {ctx}: a multi-label group: mark each value true (present) or false (absent); "
                    f"weights are not meaningful here, got {spec[v]!r}"
                )
        return True
    marked = [v for v, s in states.items() if s is not None]
    if marked and multi is False:
        v = marked[0]
        raise SchemaError(f"{at(v)}: {ctx}: true/false marks the values of a multi-label group, and this group is "
                          f"exclusive; list the acceptable values, or weight them ({v}: 0.7)")
    if marked and len(marked) < len(states):
        v = next(v for v, s in states.items() if s is None)
        raise SchemaError(f"{at(v)}: {ctx}: mixes true/false (a multi-label group's present/absent) with weights "
                          "(an exclusive group's); use one form")
    return bool(marked)


def _marked(group: str, spec: Mapping[str, Any], where: str, at: Callable[..., str]) -> Constraint:
    """``{value: true|false}``: present and absent values of a multi-label group."""
    present = [v for v, raw in spec.items() if parse_state(raw)]
    absent = [v for v, raw in spec.items() if not parse_state(raw)]
    return Constraint(group, tuple(present), (1.0,) * len(present), where=where,
                      value_where=tuple(at(v) for v in present), absent=tuple(absent), marked=True,
                      absent_where=tuple(at(v) for v in absent))


def _weighted(group: str, spec: Mapping[str, Any], where: str, at: Callable[..., str], ctx: str) -> Constraint:
    """``{value: weight}``: weighted acceptable values of an exclusive group."""
    weights = tuple(_parse_weight(raw, at(v), f"{ctx}, value '{v}'") for v, raw in spec.items())
    return Constraint(group, tuple(spec), weights, where=where, value_where=tuple(at(v) for v in spec))


def _parse_weight(raw: Any, where: str, ctx: str) -> float:
    """A weight written as a YAML string (raw scalar) or a JSON number; must be finite and > 0."""
    try:
        w = float(raw)
    except (TypeError, ValueError):
        raise SchemaError(f"{where}: {ctx}: weight {raw!r} is not a number; write e.g. 0.7") from None
    if not (math.isfinite(w) and w > 0):
        raise SchemaError(
            f"{where}: {ctx}: weight {raw!r} must be a number > 0 (leave a value out instead of weighting it 0)"
        )
    return w


def _no_duplicates(values: list[str], wheres: list[str], ctx: str) -> None:
    """Refuse a value listed twice, naming the line of the second."""
    seen: set[str] = set()
    for v, w in zip(values, wheres):
        if v in seen:
            raise SchemaError(f"{w}: {ctx}: value '{v}' listed twice")
        seen.add(v)
