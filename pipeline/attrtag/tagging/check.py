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


class RecordCheck:
    """:func:`check_record` for one layout, quick on the records that pass (most of them).

    A reader checks every record of files of millions: the quick test costs a third of the full
    one, which runs only on a record that fails the quick test, to say what is wrong.
    """

    def __init__(self, layout: RecordLayout) -> None:
        self.layout = layout
        self.fields = frozenset(layout.columns) - {"error", "message"}  # exactly a tagged record's keys
        self.exclusive = [(g.name, frozenset(g.values), f"{g.name}_prob", f"{g.name}_probs")
                          for g in layout.schema if not g.multi]
        self.multi = [(g.name, frozenset(g.values), f"{g.name}_probs") for g in layout.schema if g.multi]
        classes = layout.classes
        self.classes = None if classes is None else frozenset((*classes.rules.names, UNKNOWN))

    def __call__(self, rec: TagRecord) -> None:
        """Refuse a record as :func:`check_record` does."""
        try:
            ok = "error" not in rec and self._ok(rec)
        except TypeError:  # an unhashable value where a name belongs
            ok = False
        if not ok:
            check_record(rec, self.layout)

    def _ok(self, rec: TagRecord) -> bool:
        if rec.keys() != self.fields or type(rec["path"]) is not str or not rec["path"]:
            return False
        for name, values, prob, probs in self.exclusive:
            v, p, ps = rec[name], rec[prob], rec[probs]
            if type(v) is not str or v not in values or not _is_probability(p) or not _is_distribution(ps, values):
                return False
        for name, values, probs in self.multi:
            present, ps = rec[name], rec[probs]
            if type(present) is not list or not all(type(v) is str and v in values for v in present):
                return False
            if not _is_distribution(ps, values):
                return False
        if self.layout.thresholds:
            uncertain = rec["uncertain"]
            if type(uncertain) is not list or not all(g in self.layout.thresholds for g in uncertain):
                return False
        return self.classes is None or self._classes_ok(rec)

    def _classes_ok(self, rec: TagRecord) -> bool:
        names, listed, explanation = self.classes or frozenset(), rec["classes"], rec["class_explanation"]
        return (rec["class"] in names and _is_probability(rec["class_prob"])
                and type(listed) is list
                and all(type(c) is dict and c.get("class") in names and _is_probability(c.get("prob")) for c in listed)
                and type(explanation) is dict
                and all(type(v) in (int, float) and math.isfinite(v) for v in explanation.values()))


def _is_probability(p: Any) -> bool:
    return type(p) in (float, int) and 0.0 <= p <= 1.0


def _is_distribution(probs: Any, values: frozenset[str]) -> bool:
    # Builtins over the whole mapping, not a call per value (reading 100k records spent 0.5 s
    # here): text or None raise TypeError (the full check then names it), NaN fails total == total.
    if type(probs) is not dict or not probs.keys() <= values:
        return False
    if not probs:
        return True
    found = probs.values()
    total = sum(found)
    return total == total and min(found) >= 0.0 and max(found) <= 1.0


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
        if not isinstance(uncertain, list) or not all(isinstance(g, str) and g in layout.thresholds for g in uncertain):
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
