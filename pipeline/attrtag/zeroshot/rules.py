"""Class rules: each class described by the attribute values it takes, for zero-shot recognition.

The file syntax (``classes: {name: {group: value | [values] | {value: weight}}}``) and what a
constraint means are documented in ``datasets/RULES.md``. :meth:`Rules.load` checks a file
against a schema and names file and line for every error; :func:`lint` reports rules that are
legal but cannot work (a class with no constraint, classes no model could tell apart) as
warnings, not errors. A class that constrains no group cannot be scored:
:meth:`Rules.scorable` drops such classes and :meth:`Rules.require_scorable` refuses them, both
with the message of :func:`unscorable_message`. One class (:class:`Rule`, with a
:class:`Constraint` per group) is defined in :mod:`._rule`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, Union

from .._yaml import load_yaml
from ..errors import SchemaError
from ..schema import Schema
from ._rule import Constraint, Rule, unscorable_message

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
                for i, v in enumerate(c.values):
                    if v not in allowed:
                        vloc = c.value_where[i] if i < len(c.value_where) else loc
                        raise SchemaError(
                            f"{vloc}: class '{r.name}': unknown value '{v}' for group '{c.group}' "
                            f"(allowed: {', '.join(allowed)})"
                        )

    # -- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """``{"classes": {name: {group: spec}}}``, JSON-friendly (for ONNX metadata).

        A spec is written in its shortest exact form: one value, a list (all weights 1), or a
        ``{value: weight}`` mapping. :meth:`from_dict` reads it back to an equal ``Rules``.
        """
        out: dict[str, dict[str, Any]] = {}
        for r in self.classes:
            spec: dict[str, Any] = {}
            for c in r.constraints:
                if all(w == 1.0 for w in c.weights):
                    spec[c.group] = c.values[0] if len(c.values) == 1 else list(c.values)
                else:
                    spec[c.group] = dict(zip(c.values, c.weights))
            out[r.name] = spec
        return {"classes": out}

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

        rules = _parse(data, locate)
        if schema is not None:
            rules.check(schema)
        return rules

    @classmethod
    def load(cls, path: str | Path, schema: Schema) -> "Rules":
        """Read a rules YAML file and check it against ``schema``.

        Args:
            path: the rules file.
            schema: the schema the model predicts.

        Returns:
            The rules, classes in file order.

        Raises:
            SchemaError: "file:line: ..." for unknown top-level keys, no classes, duplicate
                classes, malformed specs, bad weights, unknown groups or values.
        """
        doc = load_yaml(path)
        rules = _parse(doc.data, doc.where)
        rules.check(schema)
        return rules


def _parse(data: Any, locate: _Locator) -> Rules:
    """Turn ``{"classes": {...}}`` into :class:`Rules`; structure only, no schema check."""
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
        constraints = tuple(_parse_constraint(str(name), str(g), spec, locate) for g, spec in body.items())
        out.append(Rule(str(name), constraints, where=where))
    return Rules(tuple(out))


def _parse_constraint(cls_name: str, group: str, spec: Any, locate: _Locator) -> Constraint:
    """One ``group: spec`` entry of a class."""

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
            raise SchemaError(f"{where}: {ctx}: empty mapping; give {{value: weight}} pairs or drop the group")
        values, weights, wheres = [], [], []
        for v, raw in spec.items():
            if not isinstance(v, str):
                raise SchemaError(f"{at(v)}: {ctx}: value {v!r} must be a plain name")
            values.append(v)
            weights.append(_parse_weight(raw, at(v), f"{ctx}, value '{v}'"))
            wheres.append(at(v))
        return Constraint(group, tuple(values), tuple(weights), where=where, value_where=tuple(wheres))
    raise SchemaError(f"{where}: {ctx}: expected a value, a list of values or {{value: weight}}; got {spec!r}")


def _parse_weight(raw: Any, where: str, ctx: str) -> float:
    """A weight written as a YAML string (raw scalar) or a JSON number; must be finite and > 0."""
    if isinstance(raw, bool):  # JSON true/false would otherwise pass float() as 1.0/0.0
        raw = str(raw).lower()
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


def lint(
    rules: Rules, schema: Schema | None = None, label_counts: Mapping[str, Sequence[int]] | None = None
) -> list[str]:
    """Report rules that are legal but cannot do their job. Nothing is raised.

    Args:
        rules: the class rules.
        schema: when given, also report constraints that accept every value of a group
            equally (they add the same term to every image and carry no information).
        label_counts: the model's training label counts per group (with ``schema``): also
            report each accepted value no training image carried; the model never learnt to
            predict it, so a class that relies on it is named only by accident.

    Returns:
        One message per problem: classes that constrain no group (they cannot be scored), and
        each set of classes with identical rules (no model could tell them apart).
    """
    warnings: list[str] = []
    for r in rules:
        if not r.constraints:
            warnings.append(unscorable_message(r) + " (add at least one group: value)")
    by_signature: dict[tuple, list[Rule]] = {}
    for r in rules:
        if r.constraints:
            by_signature.setdefault(r.signature(), []).append(r)
    for sig, members in by_signature.items():
        if len(members) > 1:
            names = ", ".join(f"'{m.name}'" for m in members)
            desc = "; ".join(
                f"{g}=" + "|".join(v if w == 1.0 else f"{v}:{w:g}" for v, w in vw) for g, vw in sig
            )
            warnings.append(
                f"{members[0].where or 'rules'}: classes {names} have identical rules ({desc}); "
                "no model can tell them apart - add a group that distinguishes them"
            )
    if schema is not None:
        for r in rules:
            for c in r.constraints:
                if c.group in schema and set(c.values) == set(schema[c.group].values) and len(set(c.weights)) == 1:
                    warnings.append(
                        f"{c.where or r.where or 'rules'}: class '{r.name}' accepts every value of "
                        f"'{c.group}'; the constraint carries no information (drop it)"
                    )
                counts = (label_counts or {}).get(c.group)
                known = c.group in schema and counts is not None and len(counts) == len(schema[c.group])
                for v in c.values if known else ():  # counts that do not fit: the scorer says so
                    if v in schema[c.group].values and counts[schema[c.group].index(v)] == 0:
                        warnings.append(
                            f"{c.where or r.where or 'rules'}: class '{r.name}' depends on {c.group}={v}, which no "
                            "training image of the model carries; the model never learnt it, so the class can "
                            "only be named by accident (label some images with it, or drop it from the rule)"
                        )
    return warnings


#: What :func:`resolve_rules` takes: a rules file, the dict form, or rules already parsed.
RulesSource = Union["Rules", str, "os.PathLike[str]", Mapping[str, Any]]


def resolve_rules(
    rules: RulesSource, schema: Schema, *, source: str | None = None,
    label_counts: Mapping[str, Sequence[int]] | None = None,
) -> tuple[Rules, list[str]]:
    """Rules from wherever they come, checked against ``schema``: the one way to load them.

    Args:
        rules: a YAML file, the ``{"classes": ...}`` dict (model metadata, an output header) or
            a :class:`Rules`.
        schema: the model's schema.
        source: names a dict's origin in messages (default ``"rules"``).
        label_counts: the model's training label counts, for the lint (see :func:`lint`).

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
    return loaded.scorable(), lint(loaded, schema, label_counts)
