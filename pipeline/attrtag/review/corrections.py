"""Corrections back: a Label Studio annotation export -> a manifest that ``attrtag train`` reads.

Label Studio's JSON export is an array of tasks, each with its ``data`` (ours carry ``path``,
see :mod:`.labelstudio`) and its ``annotations``. Per task the annotation used is the one
marked ground truth, else the newest one not cancelled; every ``choices`` result of a schema
group becomes that group's label, and an exclusive group without one stays an empty cell ("no
label", the partial-label case training is built for). A multi-label group is a row of
checkboxes the annotator saw whole, so the values checked are present and the others absent
(``dot|ring``; ``[]`` when none is checked, which Label Studio stores as no result at all). The
rules are in ``datasets/REVIEW.md``.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from .._files import write_text
from ..data.multilabel import ABSENT, PRESENT, format_values
from ..errors import ManifestError
from ..schema import Group, Schema
from .labelstudio import CLASS_CONTROL


@dataclass(frozen=True)
class Correction:
    """One reviewed image: its path and the labels its annotation gave, as manifest cells
    (group -> value; a multi-label group -> ``dot|ring`` or ``[]``)."""

    path: str
    labels: Mapping[str, str]
    where: str  # "EXPORT:LINE (task ID)", for messages


def _tasks_with_lines(text: str, source: Path) -> Iterator[tuple[int, Any]]:
    """``(line, task)`` of each element of a JSON array, so errors can name the line."""
    decoder = json.JSONDecoder()
    pos = _skip_ws(text, 0)
    if not text.startswith("[", pos):
        raise ManifestError(f"{source}:1: not a Label Studio JSON export (expected a list of tasks; export as JSON)")
    pos = _skip_ws(text, pos + 1)
    if text.startswith("]", pos):
        return
    while True:
        line = text.count("\n", 0, pos) + 1
        try:
            item, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise ManifestError(f"{source}:{err.lineno}: invalid JSON ({err.msg})") from None
        yield line, item
        pos = _skip_ws(text, pos)
        if text.startswith("]", pos):
            return
        if not text.startswith(",", pos):
            where = text.count("\n", 0, pos) + 1
            raise ManifestError(f"{source}:{where}: invalid JSON (expected ',' or ']' between tasks)")
        pos = _skip_ws(text, pos + 1)


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _chosen_annotation(task: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ground-truth annotation, else the newest one (``created_at``, then list order).

    Cancelled ("skipped") annotations do not count, as in Label Studio's own converter;
    ``completions`` is the name older Label Studio versions exported them under.
    """
    found = task.get("annotations", task.get("completions")) or []
    live = [a for a in found if isinstance(a, dict) and not (a.get("was_cancelled") or a.get("skipped"))]
    pool = [a for a in live if a.get("ground_truth")] or live
    return max(enumerate(pool), key=lambda ia: (str(ia[1].get("created_at") or ""), ia[0]))[1] if pool else None


def read_labelstudio_export(
    path: str | os.PathLike[str], schema: Schema, *, root: str | os.PathLike[str] | None = None
) -> list[Correction]:
    """The corrections in a Label Studio JSON export, validated against ``schema``.

    Args:
        path: the export (Label Studio: Export -> JSON) of tasks made by ``attrtag convert``.
        schema: the schema the manifest is for.
        root: the folder relative task paths are relative to (default: the current folder).

    Returns:
        One correction per task with an annotation, in export order.

    Raises:
        ManifestError: ``EXPORT:LINE: ...`` naming the task and value: not an export, a task
            without ``data.path``, a choice that is not a value of its group, several choices
            for an exclusive group (or one value twice for a multi-label one), a choices control
            that is neither a group nor the class.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError(f"{path}: cannot read it ({err})") from None
    base = Path(root) if root is not None else Path.cwd()
    out = []
    for line, item in _tasks_with_lines(text, path):
        where = f"{path}:{line}"
        if not isinstance(item, dict) or not isinstance(item.get("data"), dict):
            raise ManifestError(f"{where}: not a Label Studio task (no 'data' object); export as JSON, not JSON_MIN/CSV")
        where += f" (task {item.get('id', '?')})"
        rel = item["data"].get("path")
        if not isinstance(rel, str) or not rel:
            raise ManifestError(
                f"{where}: the task has no data.path; convert the tags with 'attrtag convert --to labelstudio' "
                "and import those tasks"
            )
        annotation = _chosen_annotation(item)
        if annotation is None:
            continue  # not reviewed (or every annotation cancelled): nothing to learn from
        labels = _labels(annotation.get("result") or [], schema, where)
        out.append(Correction(os.path.abspath(base / rel), labels, where))
    return out


def _labels(result: list[Any], schema: Schema, where: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for region in result:
        if not isinstance(region, dict) or region.get("type") != "choices":
            continue  # other controls a reviewer may have added (comments, ratings) carry no label
        name = region.get("from_name")
        chosen = (region.get("value") or {}).get("choices") or []
        if name != CLASS_CONTROL and name not in schema:
            raise ManifestError(
                f"{where}: choices control '{name}' is not a group of the schema ({', '.join(schema.names)}); "
                "label with the config 'attrtag convert' wrote, or pass the schema the tags were made with"
            )
        if name != CLASS_CONTROL and schema[name].multi:
            labels[name] = _checked(schema[name], chosen, where)
            continue
        if len(chosen) != 1:
            raise ManifestError(f"{where}: '{name}' has {len(chosen)} choices {chosen}; a group takes exactly one")
        value = str(chosen[0])
        if name != CLASS_CONTROL and value not in schema[name].values:
            raise ManifestError(
                f"{where}: '{name}' = '{value}' is not a value of the schema (allowed: "
                f"{', '.join(schema[name].values)}); fix the labelling config or the schema"
            )
        labels[name] = value
    for g in schema.multi:  # seen with nothing checked: every value absent
        labels.setdefault(g.name, _checked(g, [], where))
    return labels


def _checked(group: Group, chosen: list[Any], where: str) -> str:
    """The manifest cell of a multi-label group's checkboxes: the values checked, the rest absent."""
    for v in chosen:
        if v not in group.values:
            raise ManifestError(
                f"{where}: '{group.name}' = '{v}' is not a value of the schema (allowed: "
                f"{', '.join(group.values)}); fix the labelling config or the schema"
            )
    if len(set(chosen)) != len(chosen):
        raise ManifestError(f"{where}: '{group.name}' lists a value twice {chosen}; check each value once")
    return format_values(group, [PRESENT if v in chosen else ABSENT for v in group.values])


def write_manifest(corrections: list[Correction], schema: Schema, out: str | os.PathLike[str]) -> Path:
    """Write the corrections as a manifest CSV (``datasets/MANIFEST.md``), atomically.

    Columns: ``path`` (absolute), the groups in schema order (empty: not annotated; a
    multi-label group's values present, ``[]`` for none), then ``class`` when any correction
    names one. A path reviewed twice keeps its last correction.

    Args:
        corrections: from :func:`read_labelstudio_export`.
        schema: column order.
        out: the CSV to write.

    Returns:
        ``out``.

    Raises:
        ManifestError: no task in the export was annotated.
    """
    if not corrections:
        raise ManifestError("no annotated task in the export: nothing to write (annotate and submit tasks first)")
    rows = {c.path: c for c in corrections}  # last wins, order of first appearance
    with_class = any(CLASS_CONTROL in c.labels for c in rows.values())
    columns = ["path", *schema.names, *([CLASS_CONTROL] if with_class else [])]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for path, c in rows.items():
        writer.writerow([path, *(c.labels.get(col, "") for col in columns[1:])])
    return write_text(out, buf.getvalue())
