"""Manifests: which image has which labels, in CSV or JSONL.

CSV: a ``path`` column (relative to the manifest's folder, or absolute), one column per schema
group (an empty cell or ``NA`` = no label), an optional ``split`` column (train/val/test) and any
other columns (kept as ``extra``, e.g. ``class``). JSONL: one object per line,
``{"path": ..., "labels": {group: value}, "split": ..., ...}``. A multi-label group's cell lists
the values present (``red|white``: the others absent), ``[]`` for none of them, or only some
values, each present or absent (``+red|-blue``: the rest unknown); :mod:`.multilabel` reads it.
A file named by several rows is one sample: rows that agree are merged (counted, one warning),
rows that contradict (two labels of a group, two splits) are an error naming both lines
(:func:`merge_repeats`).
The format is documented in ``datasets/MANIFEST.md``.
"""
from __future__ import annotations

import csv
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..errors import ManifestError
from ..schema import MISSING_TOKENS, Schema
from .multilabel import ABSENT, PRESENT, parse_values

_logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
RESERVED = ("path", "split", "labels")


@dataclass(frozen=True)
class Sample:
    """One image: its resolved path, its labels and extras.

    Attributes:
        path: the image file.
        labels: one label index per group, in schema order (``-1``: none; always ``-1`` for a
            multi-label group).
        split: ``train``, ``val``, ``test`` or None.
        line: the manifest line it came from.
        extra: the other columns (``class``, ...).
        multi: per multi-label group with any label, one entry per value: ``1`` present, ``0``
            absent, ``-1`` unknown. A group missing here is unknown altogether.
    """

    path: str
    labels: tuple[int, ...]
    split: str | None = None
    line: int = 0
    extra: Mapping[str, str] = field(default_factory=dict)
    multi: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def targets(self, schema: Schema) -> list[int]:
        """The training target row: :attr:`labels`, then every multi-label group's values
        (see :attr:`attrtag.schema.Schema.multi_slices`)."""
        row = list(self.labels)
        for g in schema.multi:
            row += self.multi.get(g.name, (-1,) * len(g))
        return row


@dataclass
class Manifest:
    """Validated samples of one manifest file, plus the rows skipped with ``skip_bad``."""

    source: str
    schema: Schema
    samples: list[Sample]
    skipped: list[str] = field(default_factory=list)
    merged: int = 0  # rows that repeated an earlier row's image (labels merged into it)

    def __len__(self) -> int:
        return len(self.samples)

    def split(self, name: str | None) -> list[Sample]:
        """Samples of split ``name`` (all samples when ``name`` is None)."""
        if name is None:
            return list(self.samples)
        return [r for r in self.samples if r.split == name]

    @property
    def has_splits(self) -> bool:
        return any(r.split for r in self.samples)


def _label_index(schema: Schema, group: str, value: Any, where: str) -> int:
    if value is None:
        return -1
    value = str(value).strip()
    if value in MISSING_TOKENS:
        return -1
    try:
        return schema[group].index(value)
    except KeyError:
        allowed = ", ".join(schema[group].values)
        raise ManifestError(f"{where}: group '{group}' has value '{value}', not in the schema ({allowed})") from None


def _make_sample(
    schema: Schema, base: Path, raw_path: Any, labels: Mapping[str, Any], split: Any, extra: dict[str, str],
    where: str, line: int, check_files: bool,
) -> Sample:
    if not isinstance(raw_path, str) or not raw_path.strip():
        raise ManifestError(f"{where}: empty or missing 'path'")
    p = Path(raw_path.strip())
    full = p if p.is_absolute() else base / p
    if check_files and not full.is_file():
        raise ManifestError(f"{where}: image file not found: {raw_path}")
    unknown = [g for g in labels if g not in schema]
    if unknown:
        raise ManifestError(f"{where}: unknown group '{unknown[0]}' (schema groups: {', '.join(schema.names)})")
    idx = tuple(-1 if g.multi else _label_index(schema, g.name, labels.get(g.name), where) for g in schema)
    multi = {g.name: v for g in schema.multi if (v := parse_values(g, labels.get(g.name), where)) is not None}
    split_s = None if split is None or str(split).strip() in MISSING_TOKENS else str(split).strip()
    if split_s is not None and split_s not in SPLITS:
        raise ManifestError(f"{where}: split '{split_s}' is not one of {', '.join(SPLITS)}")
    return Sample(path=os.fspath(full), labels=idx, split=split_s, line=line, extra=extra, multi=multi)


def _csv_rows(path: Path, schema: Schema) -> Iterable[tuple[int, dict[str, Any], dict[str, str]]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise ManifestError(f"{path}: empty manifest (no header row)") from None
        header = [h.strip() for h in header]
        if "path" not in header:
            raise ManifestError(f"{path}:1: no 'path' column in the header ({', '.join(header)})")
        dupes = [h for h, n in Counter(header).items() if n > 1]
        if dupes:
            raise ManifestError(f"{path}:1: column '{dupes[0]}' appears twice in the header")
        missing = [g for g in schema.names if g not in header]
        if missing:
            _logger.warning("%s: no column for group(s) %s: those groups have no labels here", path, ", ".join(missing))
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                yield line, {"__error__": f"has {len(row)} fields, the header has {len(header)}"}, {}
                continue
            cells = dict(zip(header, row))
            labels = {g: cells[g] for g in schema.names if g in cells}
            extra = {k: v for k, v in cells.items() if k not in schema and k not in RESERVED}
            yield line, {"path": cells["path"], "labels": labels, "split": cells.get("split")}, extra


def _jsonl_rows(path: Path) -> Iterable[tuple[int, dict[str, Any], dict[str, str]]]:
    with open(path, encoding="utf-8-sig") as f:  # a BOM (Notepad writes one) is read as the CSV reader does
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as err:
                yield line, {"__error__": f"invalid JSON ({err.msg})"}, {}
                continue
            if not isinstance(obj, dict) or not isinstance(obj.get("labels", {}), dict):
                yield line, {"__error__": "expected an object with 'path' and a 'labels' object"}, {}
                continue
            extra = {k: str(v) for k, v in obj.items() if k not in RESERVED}
            yield line, {"path": obj.get("path"), "labels": obj.get("labels", {}), "split": obj.get("split")}, extra


def read_manifest(
    path: str | Path, schema: Schema, *, skip_bad: bool = False, check_files: bool = True
) -> Manifest:
    """Read and validate a CSV or JSONL manifest against ``schema``.

    Args:
        path: ``.csv`` or ``.jsonl``/``.json`` file.
        schema: the label schema.
        skip_bad: skip malformed rows, unknown labels and missing files (counted in
            ``Manifest.skipped``) instead of raising on the first one.
        check_files: check that every image file exists.

    Returns:
        The manifest.

    Raises:
        ManifestError: naming the file and line, unless ``skip_bad``.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    rows = _jsonl_rows(path) if path.suffix.lower() in (".jsonl", ".json", ".ndjson") else _csv_rows(path, schema)
    base = path.resolve().parent
    samples: list[Sample] = []
    skipped: list[str] = []
    try:
        for line, row, extra in rows:
            where = f"{path}:{line}"
            try:
                if "__error__" in row:
                    raise ManifestError(f"{where}: malformed row: {row['__error__']}")
                samples.append(
                    _make_sample(schema, base, row["path"], row["labels"], row["split"], extra, where, line, check_files)
                )
            except ManifestError as err:
                if not skip_bad:
                    raise
                skipped.append(str(err))
    except UnicodeDecodeError as err:
        raise ManifestError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except csv.Error as err:
        raise ManifestError(f"{path}: unreadable CSV ({err})") from None
    samples, merged = merge_repeats(schema, samples, path, skipped if skip_bad else None)
    if skipped:
        _logger.warning("%s: skipped %d bad row(s); first: %s", path, len(skipped), skipped[0])
    if not samples:
        raise ManifestError(f"{path}: no usable rows")
    return Manifest(source=str(path), schema=schema, samples=samples, skipped=skipped, merged=merged)


def file_identity(path: str) -> Any:
    """What makes two paths one image: the file itself (device and inode: a symbolic link, a
    linked folder or a hard link is the file it leads to), else its normalised absolute path."""
    try:
        st = os.stat(path)
    except OSError:  # not there (check_files=False): its spelling is all there is
        return os.path.normcase(os.path.abspath(path))
    return st.st_dev, st.st_ino


def merge_repeats(
    schema: Schema, samples: list[Sample], source: Path, skipped: list[str] | None = None
) -> tuple[list[Sample], int]:
    """One sample per image: rows naming the same file again are merged into its first row.

    A repeat that agrees (the same split, no group with two different labels) only adds the
    labels the first row lacks, and is counted in one warning. A repeat that contradicts is an
    error naming both lines: two labels of one group (which one is true?), or two splits (an
    image in train and val leaks into validation). With ``skipped`` (``skip_bad``) the image is
    dropped instead, and the error appended there.

    Returns:
        The samples, in first-row order, and how many repeats were merged.
    """
    first: dict[Any, int] = {}
    out: list[Sample | None] = []
    repeats: list[tuple[int, int]] = []  # (line, the line it repeats)
    for s in samples:
        key = file_identity(s.path)
        if key not in first:
            first[key] = len(out)
            out.append(s)
            continue
        kept = out[first[key]]
        if kept is None:  # already dropped for a contradiction
            continue
        try:
            out[first[key]] = _merge(schema, kept, s, source)
            repeats.append((s.line, kept.line))
        except ManifestError as err:
            if skipped is None:
                raise
            skipped.append(str(err))
            out[first[key]] = None
    if repeats:
        _logger.warning("%s: %d row(s) name an image an earlier row names (first: line %d repeats line %d); "
                        "each was merged into that row", source, len(repeats), *repeats[0])
    return [s for s in out if s is not None], len(repeats)


def _merge(schema: Schema, a: Sample, b: Sample, source: Path) -> Sample:
    """``a`` with the labels only ``b`` has; a contradiction is a :class:`ManifestError`."""
    where = f"{source}:{a.line} and line {b.line}: {a.path}"
    if a.split != b.split:
        both = {a.split, b.split} >= {"train", "val"}
        leak = ": the same image in train and val leaks into validation" if both else ""
        raise ManifestError(f"{where} is in split '{a.split or ''}' and in split '{b.split or ''}'{leak}; "
                            "keep the image in one split")
    labels = list(a.labels)
    for j, g in enumerate(schema.groups):
        x, y = a.labels[j], b.labels[j]
        if x >= 0 and y >= 0 and x != y:
            raise ManifestError(f"{where} has {g.name} '{g.values[x]}' and '{g.values[y]}'; keep one row per image")
        labels[j] = x if x >= 0 else y
    multi = dict(a.multi)
    for name, ys in b.multi.items():
        xs = multi.get(name, (-1,) * len(ys))
        for i, (x, y) in enumerate(zip(xs, ys)):
            if x >= 0 and y >= 0 and x != y:
                state = {PRESENT: "present", ABSENT: "absent"}
                raise ManifestError(f"{where} has {name} '{schema[name].values[i]}' {state[x]} and {state[y]}; "
                                    "keep one row per image")
        multi[name] = tuple(x if x >= 0 else y for x, y in zip(xs, ys))
    for column, y in b.extra.items():  # e.g. the class column zero-shot evaluation reads
        x = a.extra.get(column, "")
        if x.strip() and y.strip() and x != y:
            raise ManifestError(f"{where} has {column} '{x}' and '{y}'; keep one row per image")
    extra = {**b.extra, **{k: v for k, v in a.extra.items() if v.strip()}}
    return replace(a, labels=tuple(labels), multi=multi, extra=extra)


@dataclass(frozen=True)
class GroupCoverage:
    """How many images carry a label for one group, and how many per value."""

    group: str
    labelled: int
    total: int
    per_value: tuple[tuple[str, int], ...]


def coverage(schema: Schema, samples: Iterable[Sample]) -> list[GroupCoverage]:
    """Label coverage per group over ``samples``: images with any label for it, and per value the
    images labelled with it (a multi-label group: the images it is present in)."""
    samples = list(samples)
    out = []
    for j, g in enumerate(schema.groups):
        if g.multi:
            rows = [r.multi[g.name] for r in samples if g.name in r.multi]
            per_value = tuple((v, sum(row[i] == PRESENT for row in rows)) for i, v in enumerate(g.values))
            out.append(GroupCoverage(group=g.name, labelled=len(rows), total=len(samples), per_value=per_value))
            continue
        counts = Counter(r.labels[j] for r in samples if r.labels[j] >= 0)
        out.append(
            GroupCoverage(
                group=g.name,
                labelled=sum(counts.values()),
                total=len(samples),
                per_value=tuple((v, counts.get(i, 0)) for i, v in enumerate(g.values)),
            )
        )
    return out


def label_counts(schema: Schema, samples: Iterable[Sample]) -> dict[str, tuple[int, ...]]:
    """``{group: (images labelled with each value, in schema order)}`` over ``samples``.

    What a model card stores as ``label_counts`` (the training label priors).
    """
    return {c.group: tuple(n for _, n in c.per_value) for c in coverage(schema, samples)}


def value_totals(schema: Schema, samples: Iterable[Sample]) -> dict[str, tuple[int, ...]]:
    """``{multi-label group: (images where each value is known, present or absent)}`` over ``samples``.

    With :func:`label_counts` (the images a value is present in) it gives each value's prior,
    what a model card stores as ``label_totals``.
    """
    samples = list(samples)
    return {g.name: tuple(sum(r.multi[g.name][i] in (PRESENT, ABSENT) for r in samples if g.name in r.multi)
                          for i in range(len(g))) for g in schema.multi}


def format_coverage(cov: list[GroupCoverage]) -> str:
    """A small text table: group, labelled/total (%), then value=count pairs."""
    lines = []
    width = max(len(c.group) for c in cov)
    for c in cov:
        pct = 100.0 * c.labelled / c.total if c.total else 0.0
        values = " ".join(f"{v}={n}" for v, n in c.per_value)
        lines.append(f"  {c.group:<{width}}  {c.labelled:>6}/{c.total:<6} ({pct:5.1f}%)  {values}")
    return "\n".join(lines)
