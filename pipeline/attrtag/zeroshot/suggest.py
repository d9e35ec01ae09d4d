"""Rules drafted from labelled images: how a curator starts a rules file (``attrtag rules suggest``).

For each class (the value of a class column) and each group, the values its labelled images
carry are sorted by frequency and the fewest that cover a chosen share of them (``cover``,
default 80%) are kept, weighted by their share: ``gender: {Men: 0.74, Unisex: 0.12}``. A group
is left unconstrained when the class has no label for it, when covering it takes more than
``max_values`` values (e.g. the colour of T-shirts), or when the kept values are every value of
the group (no information). In a multi-label group each value is drafted on its own, over the
class's images that label it: ``true`` (present) when at least ``cover`` of them have it, ``false``
(absent) when at least ``cover`` lack it, left out otherwise (``marks: {dot: true, ring: false}``;
``max_values`` does not apply). Classes whose drafts accept the same values in every group
cannot be told apart by any model, whatever the weights; they are reported as coinciding.

The draft describes the labels, not what tells classes apart: a curator reads it, merges or
splits classes, and writes the classes nobody has images of by analogy.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

import yaml

from ..data.manifest import Sample
from ..data.multilabel import ABSENT, PRESENT
from ..errors import AttrtagError
from ..schema import Group, Schema

#: Weights are written with this many decimals (and never below their last digit).
_DECIMALS = 3
#: Shares are compared with this slack: 0.7 * 10 is 7.000000000000001 in floating point.
_SLACK = 1e-9


@dataclass(frozen=True)
class DraftClass:
    """One drafted class.

    Attributes:
        name: the class.
        images: its images among those read.
        spec: group -> one value, ``{value: share}``, or for a multi-label group
            ``{value: True | False}`` (the rules file's constraint forms).
        left_out: group -> why it is unconstrained.
    """

    name: str
    images: int
    spec: dict[str, Any]
    left_out: dict[str, str] = field(default_factory=dict)

    def signature(self) -> tuple[tuple[str, frozenset[str]], ...]:
        """The values accepted per constrained group, weights ignored (a multi-label value's state kept)."""
        def accepted(s: Any) -> frozenset[Any]:
            if isinstance(s, str):
                return frozenset([s])
            return frozenset(s.items()) if all(isinstance(x, bool) for x in s.values()) else frozenset(s)

        return tuple(sorted((g, accepted(s)) for g, s in self.spec.items()))


@dataclass(frozen=True)
class DraftRules:
    """A drafted rules file: classes, most images first, and the classes that coincide."""

    classes: tuple[DraftClass, ...]
    coincident: tuple[tuple[str, ...], ...]

    def to_dict(self) -> dict[str, Any]:
        """``{"classes": {name: spec}}``, the form :meth:`attrtag.zeroshot.rules.Rules.from_dict` reads."""
        return {"classes": {c.name: dict(c.spec) for c in self.classes}}

    def to_yaml(self, header: str = "") -> str:
        """A rules file with a comment per class (images, groups left out) and ``header`` on top."""
        lines = [f"# {h}" if h else "#" for h in header.splitlines()]
        for names in self.coincident:
            lines.append(f"# coinciding (same values in every group; no model can tell them apart): {', '.join(names)}")
        lines.append("classes:")
        for c in self.classes:
            out = "; left out: " + ", ".join(f"{g} ({why})" for g, why in c.left_out.items()) if c.left_out else ""
            lines.append(f"  # {c.images} image(s){out}")
            body = c.spec or None  # a class with no constraint stays in the file; the lint reports it
            # Block style at the top (a flow mapping cannot sit under "classes:"), flow style inside.
            text = yaml.safe_dump({c.name: body}, default_flow_style=None if body else False, sort_keys=False,
                                  allow_unicode=True, width=1 << 16)
            lines += ["  " + line for line in text.rstrip("\n").splitlines()]
        return "\n".join(lines) + "\n"


def suggest_rules(
    samples: Iterable[Sample],
    schema: Schema,
    column: str,
    *,
    cover: float = 0.8,
    max_values: int = 3,
    min_images: int = 1,
) -> DraftRules:
    """Draft rules from the labels of ``samples`` (see the module docstring).

    Args:
        samples: labelled images; those with an empty ``column`` are ignored.
        schema: the groups and values.
        column: the sample field (manifest column) holding each image's class.
        cover: the share of a class's labelled images its kept values must cover, in (0, 1].
        max_values: an exclusive group needing more values than this is left unconstrained.
        min_images: classes with fewer images are left out of the draft.

    Returns:
        The draft.

    Raises:
        AttrtagError: bad ``cover``/``max_values``/``min_images``, no image has a class, or no
            class has ``min_images``.
    """
    if not 0.0 < cover <= 1.0:
        raise AttrtagError(f"`cover` must be a share in (0, 1], got {cover!r}")
    if max_values < 1 or min_images < 1:
        raise AttrtagError(f"`max_values` and `min_images` must be at least 1, got {max_values} and {min_images}")
    counts, images = _count_labels(samples, schema, column)
    if not images:
        raise AttrtagError(f"no image has a class in column '{column}'; name the class column with `class_column`")
    drafts = [
        _draft_class(name, n, schema, counts[name], cover=cover, max_values=max_values)
        for name, n in sorted(images.items(), key=lambda kv: (-kv[1], kv[0]))
        if n >= min_images
    ]
    if not drafts:  # a rules file needs a class: say so instead of writing one without
        largest, n = min(images.items(), key=lambda kv: (-kv[1], kv[0]))
        raise AttrtagError(f"no class has `min_images={min_images}` images or more (the largest, '{largest}', "
                           f"has {n} of {sum(images.values())}); lower `min_images`")
    if not any(d.spec for d in drafts):  # nothing a scorer could use: say why, for the largest class
        why = "; ".join(f"{g}: {r}" for g, r in drafts[0].left_out.items())
        raise AttrtagError(f"no class constrains any group (class '{drafts[0].name}': {why}); raise `cover` or "
                           "`max_values`, or choose groups the manifest labels")
    by_signature: dict[Any, list[str]] = defaultdict(list)
    for d in drafts:
        if d.spec:
            by_signature[d.signature()].append(d.name)
    coincident = tuple(tuple(names) for names in by_signature.values() if len(names) > 1)
    return DraftRules(tuple(drafts), coincident)


def _count_labels(
    samples: Iterable[Sample], schema: Schema, column: str
) -> tuple[dict[str, list[Counter[Any]]], Counter[str]]:
    """Per class: each group's value counts (a multi-label group's by ``(value, PRESENT | ABSENT)``),
    and the class's images (empty ``column``: skipped)."""
    counts: dict[str, list[Counter[Any]]] = defaultdict(lambda: [Counter() for _ in schema.groups])
    images: Counter[str] = Counter()
    for s in samples:
        name = (s.extra.get(column) or "").strip()
        if name:
            images[name] += 1
            for j, g in enumerate(schema.groups):
                if g.multi:
                    known = enumerate(s.multi.get(g.name, ()))
                    counts[name][j].update((i, x) for i, x in known if x in (PRESENT, ABSENT))
                elif s.labels[j] >= 0:
                    counts[name][j][s.labels[j]] += 1
    return counts, images


def _draft_class(
    name: str, n: int, schema: Schema, counts: list[Counter[Any]], *, cover: float, max_values: int
) -> DraftClass:
    """One class's draft from its value counts per group (see the module docstring)."""
    spec: dict[str, Any] = {}
    left_out: dict[str, str] = {}
    for group, c in zip(schema.groups, counts):
        drafted, why = _draft_multi(group, c, cover) if group.multi else _draft_exclusive(group, c, cover, max_values)
        if drafted is None:
            left_out[group.name] = why
        else:
            spec[group.name] = drafted
    return DraftClass(name, n, spec, left_out)


def _draft_exclusive(group: Group, c: Counter[Any], cover: float, max_values: int) -> tuple[Any, str]:
    """The fewest most frequent values covering ``cover`` of the labels, or None and why not."""
    total = sum(c.values())
    kept, mass = [], 0
    for v, k in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])):  # most frequent first, then schema order
        if mass >= cover * total:
            break
        kept.append((group.values[v], k))
        mass += k
    if not total:
        return None, "no label"
    if len(kept) > max_values:
        return None, f"{len(kept)} values needed to cover {100 * cover:.0f}%"
    if len(kept) == len(group) and len(group) > 1:
        return None, "every value"
    if len(kept) == 1:
        return kept[0][0], ""
    return {v: max(round(k / total, _DECIMALS), 10.0 ** -_DECIMALS) for v, k in kept}, ""


def _draft_multi(group: Group, c: Counter[Any], cover: float) -> tuple[dict[str, bool] | None, str]:
    """Each value present (True) or absent (False) in at least ``cover`` of the images that label it
    (the larger share when both reach it, as a ``cover`` of 0.5 or less allows), or None and why not."""
    spec: dict[str, bool] = {}
    for i, v in enumerate(group.values):
        yes, no = c[(i, PRESENT)], c[(i, ABSENT)]
        if yes != no and max(yes, no) >= cover * (yes + no) - _SLACK:
            spec[v] = yes > no
    if spec:
        return spec, ""
    if not sum(c.values()):
        return None, "no label"
    return None, f"no value present or absent in {100 * cover:.0f}% of the images that label it"
