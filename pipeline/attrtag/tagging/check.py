"""Is a record read back from a tag file one that its header's layout could have written?

Tag files are text, and people edit them (or another program writes them). A record missing a
group, a ``<group>_prob`` of ``"high"`` or a ``<group>_probs`` that is not a mapping would
otherwise surface as a ``KeyError`` deep inside a review format or the class scorer. The
readers (:mod:`.stream`) check every record with :func:`check_record` before handing it on,
and say where: the file and line (or record number), and the field.
"""
from __future__ import annotations

import math
from typing import Any

from ..errors import OutputError
from ..schema import Group
from .records import CLASS_FIELDS, UNKNOWN, RecordLayout, TagRecord

_ERROR_FIELDS = ("path", "error", "message")


def check_record(rec: TagRecord, layout: RecordLayout) -> None:
    """Refuse a record ``layout`` could not have made (the caller names the file and line).

    Raises:
        OutputError: ``field 'NAME': what is wrong``.
    """
    if not isinstance(rec.get("path"), str) or not rec["path"]:
        raise OutputError(f"field 'path': {rec.get('path')!r} is not an image path")
    if "error" in rec:
        for name in ("error", "message"):
            if not isinstance(rec.get(name, ""), str):
                raise OutputError(f"field '{name}': {rec[name]!r} is not text")
        _no_other_fields(rec, _ERROR_FIELDS)
        return
    for group in layout.schema:
        (_check_multi if group.multi else _check_exclusive)(rec, group)
    if layout.thresholds:
        uncertain = _field(rec, "uncertain")
        if not isinstance(uncertain, list) or not all(g in layout.thresholds for g in uncertain):
            raise OutputError(f"field 'uncertain': {uncertain!r} is not a list of groups "
                              f"({', '.join(g for g, _ in layout.threshold_items())})")
    if layout.classes is not None:
        _check_classes(rec, layout)
    _no_other_fields(rec, layout.columns)


def _field(rec: TagRecord, name: str) -> Any:
    if name not in rec:
        raise OutputError(f"field '{name}' is missing")
    return rec[name]


def _no_other_fields(rec: TagRecord, columns: Any) -> None:
    extra = next((k for k in rec if k not in columns), None)
    if extra is not None:
        raise OutputError(f"field '{extra}' is not one of this output's fields ({', '.join(columns)})")


def _value(rec: TagRecord, group: Group) -> str:
    value = _field(rec, group.name)
    if not isinstance(value, str) or value not in group.values:
        raise OutputError(f"field '{group.name}': {value!r} is not one of its values ({', '.join(group.values)})")
    return value


def _probability(name: str, p: Any) -> None:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise OutputError(f"field '{name}': {p!r} is not a probability (a number from 0 to 1)")


def _distribution(rec: TagRecord, group: Group) -> dict[str, Any]:
    name = f"{group.name}_probs"
    probs = _field(rec, name)
    if not isinstance(probs, dict):
        raise OutputError(f"field '{name}': {probs!r} is not a mapping of value to probability")
    for v, p in probs.items():
        if v not in group.values:
            raise OutputError(f"field '{name}': {v!r} is not one of the values of '{group.name}' "
                              f"({', '.join(group.values)})")
        _probability(f"{name}.{v}", p)
    return probs


def _check_exclusive(rec: TagRecord, group: Group) -> None:
    _value(rec, group)
    _probability(f"{group.name}_prob", _field(rec, f"{group.name}_prob"))
    _distribution(rec, group)


def _check_multi(rec: TagRecord, group: Group) -> None:
    present = _field(rec, group.name)
    if not isinstance(present, list) or not all(isinstance(v, str) and v in group.values for v in present):
        raise OutputError(f"field '{group.name}': {present!r} is not a list of its values ({', '.join(group.values)})")
    _distribution(rec, group)


def _check_classes(rec: TagRecord, layout: RecordLayout) -> None:
    assert layout.classes is not None
    names = (*layout.classes.rules.names, UNKNOWN)
    best, prob, listed, explanation = (_field(rec, f) for f in CLASS_FIELDS)
    if best not in names:
        raise OutputError(f"field 'class': {best!r} is not a class of the rules ({', '.join(names)})")
    _probability("class_prob", prob)
    if not isinstance(listed, list) or not all(isinstance(c, dict) and c.get("class") in names for c in listed):
        raise OutputError(f"field 'classes': {listed!r} is not a list of {{'class': C, 'prob': P}}")
    for c in listed:
        _probability("classes.prob", c.get("prob"))
    if not isinstance(explanation, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in explanation.values()
    ):
        raise OutputError(f"field 'class_explanation': {explanation!r} is not a mapping of group to number")
