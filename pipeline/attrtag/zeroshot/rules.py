"""Class rules: each class described by the attribute values it takes, for zero-shot recognition.

The file syntax (``classes: {name: {group: value | [values] | {value: weight} | {value: true|false}}}``)
and what a constraint means, in an exclusive and in a multi-label group, are documented in
``datasets/RULES.md``; :mod:`._spec` reads one constraint. :meth:`Rules.load` checks a file
against a schema and names file and line for every error; :func:`lint` reports rules that are
legal but cannot work (a class with no constraint, classes no model could tell apart) as
warnings, not errors. A class that constrains no group cannot be scored:
:meth:`Rules.scorable` drops such classes and :meth:`Rules.require_scorable` refuses them, both
with the message of :func:`unscorable_message`. One class (:class:`Rule`, with a
:class:`Constraint` per group) is defined in :mod:`._rule`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, Union

from .._yaml import load_yaml
from ..errors import SchemaError
from ..schema import Schema
from ._rule import Constraint, Rule, term_name, unscorable_message
from ._spec import parse_constraint

#: Top-level keys a rules file may have. Anything else is an error naming the key.
RULES_KEYS = frozenset({"classes"})

#: Maps a key path from the document root to a "where" prefix for messages ("file:line", or the
#: source and key path for dicts read back from metadata).
_Locator = Callable[..., str]


@dataclass(frozen=True)
class Rules:
    """Ordered class rules. Class order is the column order of zero-shot scores."""

    classes: tuple[Rule, ...]
    # Schemas these rules were checked against: a run checks them once, not once per consumer.
    _checked: list[Schema] = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.classes:
            raise SchemaError("rules: no classes; add at least one under 'classes:'")
        seen: dict[str, Rule] = {}
        for r in self.classes:
            if r.name in seen:
                first = seen[r.name].where
                raise SchemaError(
                    f"{r.where or 'rules'}: duplicate class '{r.name}'"
                    + (f" (first at {first})" if first else "")
                    + "; give each class one entry"
                )
            seen[r.name] = r

    # -- views ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Rule]:
        return iter(self.classes)

    def __len__(self) -> int:
        return len(self.classes)

    def __getitem__(self, name: str) -> Rule:
        for r in self.classes:
            if r.name == name:
                return r
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        """Class names in order."""
        return tuple(r.name for r in self.classes)

    def index(self, name: str) -> int:
        """Position of class ``name``; ``KeyError`` when there is none."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(name) from None

    def scorable(self) -> "Rules":
        """These rules without the classes that constrain no group (they cannot be scored).

        Raises:
            SchemaError: no class constrains anything.
        """
        kept = tuple(r for r in self.classes if r.constraints)
        if not kept:
            raise SchemaError(f"{self.classes[0].where or 'rules'}: no class constrains any group; nothing can be scored")
        return self if len(kept) == len(self.classes) else Rules(kept, list(self._checked))  # a part of checked rules is checked

    def require_scorable(self) -> None:
        """Raise :class:`SchemaError` naming the first class that constrains no group."""
        for r in self.classes:
            if not r.constraints:
                raise SchemaError(unscorable_message(r) + "; add a constraint or remove the class")

    # -- validation -------------------------------------------------------------------------
    def check(self, schema: Schema) -> None:
        """Check every constrained group and value against ``schema``.

        Args:
            schema: the schema the model predicts.

        Raises:
            SchemaError: "file:line: ..." (or the rules' source) naming the unknown group or
                value and listing the allowed ones.
        """
        if any(s == schema for s in self._checked):
            return
        self._check_values(schema)
        self._checked.append(schema)

    def _check_values(self, schema: Schema) -> None:
        for r in self.classes:
            for c in r.constraints:
                loc = c.where or r.where or "rules"
                if c.group not in schema:
                    raise SchemaError(
                        f"{loc}: class '{r.name}': unknown group '{c.group}' "
                        f"(schema groups: {', '.join(schema.names)})"
                    )
                allowed = schema[c.group].values
                for v, vloc in _located(c, loc):
                    if v not in allowed:
                        raise SchemaError(
                            f"{vloc}: class '{r.name}': unknown value '{v}' for group '{c.group}' "
                            f"(allowed: {', '.join(allowed)})"
                        )
                _check_kind(r, c, schema[c.group].multi, loc)

    # -- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """``{"classes": {name: {group: spec}}}``, JSON-friendly (for ONNX metadata).

        A spec is written in its shortest exact form: one value, a list (all weights 1), a
        ``{value: weight}`` mapping, or, with absent values, ``{value: true|false}`` (present
        values first). :meth:`from_dict` reads it back to an equal ``Rules``.
        """
        return {"classes": {r.name: {c.group: _spec_of(c) for c in r.constraints} for r in self.classes}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], schema: Schema | None = None, *, source: str = "rules") -> "Rules":
        """Build from the :meth:`to_dict` form (or a parsed rules file).

        Args:
            data: ``{"classes": {name: {group: spec}}}``.
            schema: when given, groups and values are checked against it.
            source: names the origin in messages (e.g. ``"model.onnx metadata"``).

        Returns:
            The rules.

        Raises:
            SchemaError: naming ``source`` and the key path of the bad entry.
        """

        def locate(*keys: Any) -> str:
            return f"{source} ({'.'.join(str(k) for k in keys)})" if keys else source

        rules = _parse(data, locate, schema)
        if schema is not None:
            rules.check(schema)
        return rules

    @classmethod
    def load(cls, path: str | Path, schema: Schema, *, text: str | None = None) -> "Rules":
        """Read a rules YAML file and check it against ``schema``.

        Args:
            path: the rules file.
            schema: the schema the model predicts.
            text: the file's text when it is not (yet) on disk: a draft is checked, with
                ``path:line`` in messages, before it is written.

        Returns:
            The rules, classes in file order.

        Raises:
            SchemaError: "file:line: ..." for unknown top-level keys, no classes, duplicate
                classes, malformed specs, bad weights, unknown groups or values.
        """
        doc = load_yaml(path, text=text)
        rules = _parse(doc.data, doc.where, schema)
        rules.check(schema)
        return rules


def _spec_of(c: Constraint) -> Any:
    """One constraint in its shortest exact dict form (see :meth:`Rules.to_dict`)."""
    if c.absent:
        return {**{v: True for v in c.values}, **{v: False for v in c.absent}}
    if all(w == 1.0 for w in c.weights):
        return c.values[0] if len(c.values) == 1 else list(c.values)
    return dict(zip(c.values, c.weights))


def _located(c: Constraint, loc: str) -> list[tuple[str, str]]:
    """Every value a constraint names, present/acceptable then absent, with its "file:line"."""
    def where(wheres: tuple[str, ...], i: int) -> str:
        return wheres[i] if i < len(wheres) else loc

    return ([(v, where(c.value_where, i)) for i, v in enumerate(c.values)]
            + [(v, where(c.absent_where, i)) for i, v in enumerate(c.absent)])


def _check_kind(r: Rule, c: Constraint, multi: bool, loc: str) -> None:
    """Refuse the form a group's kind does not take: weights in a multi-label group, values marked
    true/false in an exclusive one (rules read without the schema reach this)."""
    if multi:
        for (v, vloc), w in zip(_located(c, loc), c.weights):
            if w != 1.0:
                raise SchemaError(
                    f"{vloc}: class '{r.name}': '{c.group}' is a multi-label group, where each value is present "
                    f"or absent, so weights are not meaningful; write {{{v}: true}} or {{{v}: false}}"
                )
    elif c.absent or c.marked:
        raise SchemaError(
            f"{loc}: class '{r.name}': true/false marks the values of a multi-label group, and '{c.group}' is "
            "exclusive; list the acceptable values, or weight them ({value: 0.7})"
        )


def _parse(data: Any, locate: _Locator, schema: Schema | None = None) -> Rules:
    """Turn ``{"classes": {...}}`` into :class:`Rules`; structure only (``schema`` only says which
    groups are multi-label, so that a mapping is read in the right form)."""
    if not isinstance(data, Mapping):
        raise SchemaError(f"{locate()}: a rules file must be a mapping with a 'classes:' key")
    for key in data:
        if key not in RULES_KEYS:
            raise SchemaError(
                f"{locate(key)}: unknown top-level key '{key}' (allowed: {', '.join(sorted(RULES_KEYS))})"
            )
    classes = data.get("classes")
    if not isinstance(classes, Mapping) or not classes:
        raise SchemaError(
            f"{locate('classes')}: 'classes' must be a non-empty mapping of class -> {{group: value(s)}}"
        )
    out = []
    for name, body in classes.items():
        where = locate("classes", name)
        if body is None:  # "name:" with nothing under it: legal, reported by lint()
            body = {}
        if not isinstance(body, Mapping):
            raise SchemaError(
                f"{where}: class '{name}' must map groups to values, e.g. {name}: {{covering: fur}}; got {body!r}"
            )
        constraints = tuple(parse_constraint(str(name), str(g), spec, locate, multi=_is_multi(schema, str(g)))
                            for g, spec in body.items())
        out.append(Rule(str(name), constraints, where=where))
    return Rules(tuple(out))


def _is_multi(schema: Schema | None, group: str) -> bool | None:
    """Whether ``group`` is multi-label; None without a schema or for a group it lacks (checked later)."""
    return None if schema is None or group not in schema else schema[group].multi


def lint(
    rules: Rules, schema: Schema | None = None, label_counts: Mapping[str, Sequence[int]] | None = None,
    label_totals: Mapping[str, Sequence[int]] | None = None,
) -> list[str]:
    """Report rules that are legal but cannot do their job. Nothing is raised.

    Args:
        rules: the class rules.
        schema: when given, also report constraints that accept every value of an exclusive
            group equally (they add the same term to every image and carry no information).
        label_counts: the model's training label counts per group (with ``schema``): also
            report each accepted (or, in a multi-label group, present) value no training image
            carried; the model never learnt to predict it, so a class that relies on it is
            named only by accident.
        label_totals: the images each multi-label value is known in (with ``label_counts``):
            also report each value marked absent that no training image has absent.

    Returns:
        One message per problem: classes that constrain no group (they cannot be scored), each
        set of classes with identical rules (no model could tell them apart), and the above.
    """
    warnings = [unscorable_message(r) + " (add at least one group: value)" for r in rules if not r.constraints]
    warnings += _identical(rules, schema)
    for r in rules if schema is not None else ():
        for c in r.constraints:
            if c.group in schema:
                warnings += _constraint_warnings(r, c, schema, label_counts or {}, label_totals or {})
    return warnings


def _identical(rules: Rules, schema: Schema | None) -> list[str]:
    """One warning per set of classes whose rules score identically."""
    by_signature: dict[tuple, list[Rule]] = {}
    for r in rules:
        if r.constraints:
            by_signature.setdefault(r.signature(), []).append(r)
    out = []
    for members in by_signature.values():
        if len(members) > 1:
            names = ", ".join(f"'{m.name}'" for m in members)
            desc = "; ".join(_describe(c, schema) for c in sorted(members[0].constraints, key=Constraint.signature))
            out.append(
                f"{members[0].where or 'rules'}: classes {names} have identical rules ({desc}); "
                "no model can tell them apart - add a group that distinguishes them"
            )
    return out


def _describe(c: Constraint, schema: Schema | None) -> str:
    """``g=a|b:0.5`` for an exclusive group; ``g=a, g!=b`` for a multi-label one (a term per value)."""
    if c.absent or c.marked or (schema is not None and c.group in schema and schema[c.group].multi):
        return ", ".join([term_name(c.group, v, True) for v in sorted(c.values)]
                         + [term_name(c.group, v, False) for v in sorted(c.absent)])
    return f"{c.group}=" + "|".join(v if w == 1.0 else f"{v}:{w:g}" for v, w in c.signature()[1])


def _constraint_warnings(
    r: Rule, c: Constraint, schema: Schema, counts: Mapping[str, Sequence[int]], totals: Mapping[str, Sequence[int]]
) -> list[str]:
    """What :func:`lint` says about one constraint of a checked group."""
    group, where = schema[c.group], c.where or r.where or "rules"
    out = []
    if not group.multi and set(c.values) == set(group.values) and len(set(c.weights)) == 1:
        out.append(f"{where}: class '{r.name}' accepts every value of '{c.group}'; the constraint carries no "
                   "information (drop it)")
    present, known = counts.get(c.group), totals.get(c.group)
    lines = dict(_located(c, where)) if group.multi else {}  # a multi-label value's own line; a group's for the rest
    unlearnt: list[tuple[str, str]] = []
    if present is not None and len(present) == len(group):  # counts that do not fit: the scorer says so
        ok = [v for v in c.values + c.absent if v in group.values]  # lint takes rules not checked, too
        unlearnt += [(v, term_name(c.group, v, True)) for v in c.values if v in ok and present[group.index(v)] == 0]
        if group.multi and known is not None and len(known) == len(group):
            unlearnt += [(v, term_name(c.group, v, False)) for v in c.absent
                         if v in ok and known[group.index(v)] - present[group.index(v)] <= 0]
    for v, term in unlearnt:
        out.append(f"{lines.get(v, where)}: class '{r.name}' depends on {term}, which no training image of the model "
                   "carries; the model never learnt it, so the class can only be named by accident (label some "
                   "images with it, or drop it from the rule)")
    return out


#: What :func:`resolve_rules` takes: a rules file, the dict form, or rules already parsed.
RulesSource = Union["Rules", str, "os.PathLike[str]", Mapping[str, Any]]


def resolve_rules(
    rules: RulesSource, schema: Schema, *, source: str | None = None,
    label_counts: Mapping[str, Sequence[int]] | None = None, label_totals: Mapping[str, Sequence[int]] | None = None,
) -> tuple[Rules, list[str]]:
    """Rules from wherever they come, checked against ``schema``: the one way to load them.

    Args:
        rules: a YAML file, the ``{"classes": ...}`` dict (model metadata, an output header) or
            a :class:`Rules`.
        schema: the model's schema.
        source: names a dict's origin in messages (default ``"rules"``).
        label_counts, label_totals: the model's training label counts (and the images each
            multi-label value is known in), for the lint (see :func:`lint`).

    Returns:
        ``(rules, warnings)``: the rules without classes that constrain nothing, and the
        :func:`lint` warnings (the caller prints or logs them).

    Raises:
        SchemaError: anything that makes the rules unusable, naming file and line.
    """
    if isinstance(rules, Rules):
        loaded = rules
        loaded.check(schema)
    elif isinstance(rules, Mapping):
        loaded = Rules.from_dict(rules, schema, source=source or "rules")
    else:
        loaded = Rules.load(rules, schema)
    return loaded.scorable(), lint(loaded, schema, label_counts, label_totals)
