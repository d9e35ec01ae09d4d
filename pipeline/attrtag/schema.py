"""The attribute schema: ordered groups, each with ordered values.

A group is **exclusive** (one value per image: a softmax) or **multi-label** (any number of its
values per image, none included: one sigmoid per value). A schema file is YAML with a top-level
``groups:`` mapping, e.g.::

    groups:
      covering: [fur, feathers, scales, exoskeleton]      # exclusive (the default)
      pattern: [plain, spots, stripes]
      colours: {kind: multi, values: [red, green, blue, white]}

Group order and value order are part of the model's contract: logits are laid out group by
group in this order, and checkpoints/ONNX files carry the schema so a loader can check it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from ._yaml import YamlDoc, load_yaml
from .errors import SchemaError

#: Top-level keys a schema file may have. Anything else is an error naming the key.
SCHEMA_KEYS = frozenset({"groups"})

#: Written in a label cell, means "no label for this group" (as does an empty cell).
MISSING_TOKENS = frozenset({"", "NA"})

EXCLUSIVE, MULTI = "exclusive", "multi"
KINDS = (EXCLUSIVE, MULTI)
#: Keys of a group written as a mapping (``{kind: multi, values: [...]}``).
GROUP_KEYS = frozenset({"kind", "values"})


@dataclass(frozen=True)
class Group:
    """One attribute group: a name, its ordered values and its kind.

    An exclusive group has exactly one value per labelled image (one value alone is legal but
    teaches the model nothing); a multi-label group any number of them, none included (one
    value is a yes/no tag).
    """

    name: str
    values: tuple[str, ...]
    kind: str = EXCLUSIVE

    @property
    def multi(self) -> bool:
        """Any number of the values at once (one sigmoid each), not one of them (a softmax)."""
        return self.kind == MULTI

    def __len__(self) -> int:
        return len(self.values)

    def index(self, value: str) -> int:
        """Position of ``value`` in this group; ``KeyError`` when it is not one of them."""
        try:
            return self.values.index(value)
        except ValueError:
            raise KeyError(value) from None


@dataclass(frozen=True)
class Schema:
    """Ordered attribute groups. Immutable, hashable and comparable (``==`` checks order)."""

    groups: tuple[Group, ...]

    def __post_init__(self) -> None:
        if not self.groups:
            raise SchemaError("schema has no groups")
        names = [g.name for g in self.groups]
        for g in self.groups:
            if names.count(g.name) > 1:
                raise SchemaError(f"duplicate group '{g.name}'")
            if len(g.values) < 1:
                raise SchemaError(f"group '{g.name}' has no values")
            for v in g.values:
                if g.values.count(v) > 1:
                    raise SchemaError(f"group '{g.name}': duplicate value '{v}'")

    # -- views ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Group]:
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.groups)

    def __contains__(self, name: object) -> bool:
        return any(g.name == name for g in self.groups)

    def __getitem__(self, name: str) -> Group:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        """Group names in order."""
        return tuple(g.name for g in self.groups)

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of values of each group, in order (the split sizes of the logit layer)."""
        return tuple(len(g) for g in self.groups)

    @property
    def num_outputs(self) -> int:
        """Total width of the grouped logit layer."""
        return sum(self.sizes)

    @property
    def multi(self) -> tuple[Group, ...]:
        """The multi-label groups, in order."""
        return tuple(g for g in self.groups if g.multi)

    @property
    def multi_slices(self) -> dict[str, slice]:
        """Where each multi-label group's per-value labels sit in a sample's target row.

        A target row holds one label index per group (``-1`` for multi-label groups), then
        every multi-label group's values (``1`` present, ``0`` absent, ``-1`` unknown).
        """
        out, start = {}, len(self.groups)
        for g in self.multi:
            out[g.name] = slice(start, start + len(g))
            start += len(g)
        return out

    @property
    def target_width(self) -> int:
        """Columns of a target row (see :attr:`multi_slices`)."""
        return len(self.groups) + sum(len(g) for g in self.multi)

    def group_index(self, name: str) -> int:
        """Position of group ``name``."""
        for i, g in enumerate(self.groups):
            if g.name == name:
                return i
        raise KeyError(name)

    # -- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """``{group: [values...]}`` in order, a multi-label group as ``{"kind": "multi", "values": [...]}``.

        Exclusive groups keep the plain list, so a schema without multi-label groups is stored
        exactly as before they existed.
        """
        return {g.name: {"kind": MULTI, "values": list(g.values)} if g.multi else list(g.values) for g in self.groups}

    @classmethod
    def from_dict(cls, groups: Mapping[str, Any], *, source: str = "schema") -> "Schema":
        """Build from ``{group: [values...]}`` (as stored in checkpoints and ONNX metadata).

        The same checks as a schema file (:meth:`load`); messages name ``source`` and the entry.
        """

        def locate(*keys: Any) -> str:
            return f"{source} ({'.'.join(str(k) for k in keys)})" if keys else source

        return cls(_parse_groups(groups, locate))

    @classmethod
    def load(cls, path: str | Path) -> "Schema":
        """Read and validate a schema YAML file.

        Raises:
            SchemaError: naming the file, the line and the entry for unknown top-level keys,
                missing ``groups``, empty groups, duplicate groups or duplicate values.
        """
        return cls.from_yaml_doc(load_yaml(path))

    @classmethod
    def from_yaml_doc(cls, doc: YamlDoc) -> "Schema":
        """Validate an already parsed YAML document (see :meth:`load`)."""
        data = doc.data
        if not isinstance(data, dict):
            raise SchemaError(f"{doc.where()}: a schema file must be a mapping with a 'groups:' key")
        for key in data:
            if key not in SCHEMA_KEYS:
                raise SchemaError(
                    f"{doc.where(key)}: unknown top-level key '{key}' (allowed: {', '.join(sorted(SCHEMA_KEYS))})"
                )
        return cls(_parse_groups(data.get("groups"), lambda *keys: doc.where("groups", *keys) if keys else doc.where("groups")))

    def check_same(self, other: "Schema", *, what: str) -> None:
        """Raise ``SchemaError`` "expected X, got Y" when ``other`` differs from this schema."""
        if self == other:
            return
        if self.names != other.names:
            raise SchemaError(f"{what}: schema groups differ: expected {list(self.names)}, got {list(other.names)}")
        for a, b in zip(self.groups, other.groups):
            if a.values != b.values:
                raise SchemaError(
                    f"{what}: values of group '{a.name}' differ: expected {list(a.values)}, got {list(b.values)}"
                )
            if a.kind != b.kind:
                raise SchemaError(f"{what}: group '{a.name}' is {a.kind} there, {b.kind} here")


def _parse_groups(groups: Any, locate: Callable[..., str]) -> tuple[Group, ...]:
    """The one validator of ``{group: [values...] | {kind, values}}``, for files and stored dicts alike.

    ``locate(*keys)`` gives the "where" prefix of a message: ``file:line`` for a YAML file,
    the source and key path for a dict read back from a checkpoint or ONNX metadata.
    """
    if not isinstance(groups, Mapping) or not groups:
        raise SchemaError(f"{locate()}: 'groups' must be a non-empty mapping of group -> list of values")
    out = []
    for name, spec in groups.items():
        if not isinstance(name, str) or name in MISSING_TOKENS:
            raise SchemaError(f"{locate(name)}: invalid group name {name!r}")
        kind, values, at = _kind_and_values(name, spec, locate)
        if isinstance(values, (str, int, float)) and not isinstance(values, bool):
            raise SchemaError(f"{locate(*at)}: group '{name}' is the single value {values!r}, not a list; list its "
                              f"values, e.g. {name}: [{values}, other]")
        if not isinstance(values, (list, tuple)) or not values:
            raise SchemaError(f"{locate(*at)}: group '{name}' is empty; list its values, e.g. {name}: [a, b]")
        seen: set[str] = set()
        for i, v in enumerate(values):
            if not isinstance(v, str) or v in MISSING_TOKENS:
                raise SchemaError(f"{locate(*at, i)}: group '{name}' has an invalid value {v!r}")
            if kind == MULTI and ("|" in v or v.strip() != v):
                # A manifest cell lists a multi-label group's values as `a|b` (each stripped): no cell could name these.
                raise SchemaError(f"{locate(*at, i)}: group '{name}' has value {v!r}, which a manifest cell cannot "
                                  "name (it lists values as a|b: no '|' or surrounding blanks in a value)")
            if v in seen:
                raise SchemaError(f"{locate(*at, i)}: group '{name}' lists value '{v}' twice")
            seen.add(v)
        out.append(Group(name, tuple(values), kind))
    return tuple(out)


def _kind_and_values(name: str, spec: Any, locate: Callable[..., str]) -> tuple[str, Any, tuple[Any, ...]]:
    """A group's kind, its values and where they are: a list (exclusive) or ``{kind, values}``."""
    if not isinstance(spec, Mapping):
        return EXCLUSIVE, spec, (name,)
    for key in spec:
        if key not in GROUP_KEYS:
            raise SchemaError(f"{locate(name, key)}: group '{name}': unknown key '{key}' "
                              f"(a group is a list of values, or {{kind: multi, values: [...]}})")
    kind = spec.get("kind", EXCLUSIVE)
    if kind not in KINDS:
        raise SchemaError(f"{locate(name, 'kind')}: group '{name}': kind {kind!r} is not one of {', '.join(KINDS)}")
    if "values" not in spec:
        raise SchemaError(f"{locate(name)}: group '{name}' has no 'values'; e.g. {name}: {{kind: {kind}, values: [a, b]}}")
    return kind, spec["values"], (name, "values")
