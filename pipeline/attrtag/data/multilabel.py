"""The labels of a multi-label group in a manifest cell: which values are present, absent, unknown.

The syntax (``datasets/MANIFEST.md``):

* ``red|white``: these values are present, every other value of the group absent;
* ``[]``: none of the values is present (all absent);
* ``+red|-blue``: red present, blue absent, the others unknown (every entry signed);
* an empty cell, ``NA`` (or JSON ``null``): the whole group is unknown.

JSONL takes the same strings, a list of the values present (``["red", "white"]``, ``[]``) or a
mapping of some values to present or absent (``{"red": 1, "blue": 0}``; ``true``/``false`` too).
Every mistake names the file, the line, the group and the value.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from ..errors import ManifestError
from ..schema import MISSING_TOKENS, Group

PRESENT, ABSENT, UNKNOWN = 1, 0, -1
#: A cell saying "none of the values".
NONE_PRESENT = "[]"
SEPARATOR = "|"


def parse_values(group: Group, raw: Any, where: str) -> tuple[int, ...] | None:
    """One entry per value of ``group`` (:data:`PRESENT`, :data:`ABSENT`, :data:`UNKNOWN`), or
    None when the whole group is unknown.

    Raises:
        ManifestError: ``where: group 'g': ...`` naming the bad value and the allowed ones.
    """
    if raw is None or (isinstance(raw, str) and raw.strip() in MISSING_TOKENS):
        return None
    if isinstance(raw, str):
        labels = _from_text(group, raw.strip(), where)
    elif isinstance(raw, list):
        labels = _closed(group, raw, where)
    elif isinstance(raw, Mapping):
        labels = _partial(group, raw.items(), where)
    else:
        raise ManifestError(f"{where}: group '{group.name}': {raw!r} is not a list of values ({_syntax(group)})")
    return None if all(x == UNKNOWN for x in labels) else labels


def format_values(group: Group, labels: Sequence[int]) -> str:
    """The cell :func:`parse_values` reads back as ``labels`` (empty when all unknown)."""
    if all(x == UNKNOWN for x in labels):
        return ""
    if UNKNOWN in labels:
        return SEPARATOR.join(("+" if x == PRESENT else "-") + v for v, x in zip(group.values, labels) if x != UNKNOWN)
    present = [v for v, x in zip(group.values, labels) if x == PRESENT]
    return SEPARATOR.join(present) if present else NONE_PRESENT


def _from_text(group: Group, text: str, where: str) -> tuple[int, ...]:
    if text == NONE_PRESENT:
        return (ABSENT,) * len(group)
    tokens = [t.strip() for t in text.split(SEPARATOR)]
    if any(not t for t in tokens):
        raise ManifestError(f"{where}: group '{group.name}': empty entry in {text!r} ({_syntax(group)})")
    signed = [t[0] in "+-" and t not in group.values for t in tokens]  # a value may itself start with + or -
    if all(signed):
        return _partial(group, ((t[1:].strip(), PRESENT if t[0] == "+" else ABSENT) for t in tokens), where)
    if any(signed):
        raise ManifestError(f"{where}: group '{group.name}': {text!r} mixes signed (+v, -v) and plain values; "
                            f"sign every entry to label some values, or none to list those present")
    return _closed(group, tokens, where)


def _closed(group: Group, present: Iterable[Any], where: str) -> tuple[int, ...]:
    """These values present, the others absent."""
    out = [ABSENT] * len(group)
    for v in present:
        i = _index(group, v, where)
        if out[i] == PRESENT:
            raise ManifestError(f"{where}: group '{group.name}' lists value '{v}' twice")
        out[i] = PRESENT
    return tuple(out)


def _partial(group: Group, items: Iterable[tuple[Any, Any]], where: str) -> tuple[int, ...]:
    """Some values present or absent, the others unknown."""
    out = [UNKNOWN] * len(group)
    for v, state in items:
        i = _index(group, v, where)
        if state is None:
            continue
        if not (isinstance(state, (bool, int, float)) and state in (0, 1)):
            raise ManifestError(f"{where}: group '{group.name}', value '{v}': {state!r} is neither 1 (present) "
                                "nor 0 (absent)")
        if out[i] != UNKNOWN:
            raise ManifestError(f"{where}: group '{group.name}' labels value '{v}' twice")
        out[i] = PRESENT if state else ABSENT
    return tuple(out)


def _index(group: Group, value: Any, where: str) -> int:
    try:
        return group.index(str(value).strip())
    except KeyError:
        raise ManifestError(f"{where}: group '{group.name}' has value '{value}', not in the schema "
                            f"({', '.join(group.values)})") from None


def _syntax(group: Group) -> str:
    a, b = group.values[0], group.values[-1]
    return f"write e.g. {a}|{b} (present, the rest absent), [] (none), +{a}|-{b} (some present or absent)"
