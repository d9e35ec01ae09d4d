"""The tag record layout, its JSONL/CSV/Parquet writers and readers, and resuming a killed run.

Records
-------
One record per input image. A tagged image (groups in schema order, ``covering`` as example)::

    {"path": "photos/a.jpg",
     "covering": "fur", "covering_prob": 0.912345,
     "covering_probs": {"fur": 0.912345, "feathers": 0.05, "scales": 0.03, "exoskeleton": 0.007655},
     ...one value / _prob / _probs triple per group...,
     "uncertain": ["pattern"]}

* ``path``: :func:`attrtag.images.display_path` of the input (printable UTF-8; non-UTF-8 bytes
  appear as ``\\xNN``).
* ``<group>``: the most probable value; ``<group>_prob``: its probability.
* ``<group>_probs``: value -> probability, every value in schema order; with ``top_k`` only the
  ``k`` most probable, most probable first.
* ``uncertain``: present only when thresholds were set; the groups (schema order) whose top
  probability is below their threshold. The top value is still reported for them.
* ``class``, ``class_prob``, ``classes``, ``class_explanation``: present only when the run had
  class rules (``--rules`` or rules embedded in the model); see :mod:`attrtag.zeroshot_tags`.
* Probabilities are rounded to 6 decimals (float32 softmax outputs carry about 7 digits), which
  keeps files small and makes records of the same model byte-identical across runs.

A failed image has no predictions, only::

    {"path": "photos/broken.jpg", "error": "truncated", "message": "photos/broken.jpg: file is truncated, ..."}

``error`` is an :data:`attrtag.images.REASONS` code; ``message`` is one line.

Flat columns (CSV, Parquet, and the column arrays of :class:`attrtag.tagging.TagWorker`):
``path``, then per group ``<group>``, ``<group>_prob``, ``<group>_probs`` (the mapping as a JSON
string), then ``uncertain`` (a JSON list string; only with thresholds), the class fields (only
with rules; ``classes`` and ``class_explanation`` as JSON strings), ``error``, ``message``.
Cells that do not apply are empty (CSV) or null (Parquet). :meth:`RecordLayout.to_flat` and
:meth:`RecordLayout.from_flat` convert, and :func:`read_output` reads any format back into the
record form above.

Header (what made the file)
---------------------------
``{"_attrtag": {"format_version": 1, "model": "model.onnx", "model_sha256": "...",
"schema": {group: [values]}, "top_k": null, "thresholds": {group: p}, "classes": null}}`` is
stored

* JSONL: as the file's first line (skip lines with an ``_attrtag`` key when reading by hand);
* CSV: in a sidecar ``FILE.meta.json`` (a CSV has nowhere else to put it), written first;
* Parquet: in the file's key-value metadata under ``attrtag``.

With class rules, ``classes`` holds the rules themselves and the class options
(:meth:`attrtag.zeroshot_tags.ClassTagging.to_dict`) and ``format_version`` is 2; files
without rules are still written as version 1.

Resume
------
:func:`open_output` on an existing output checks its header against this run's (same schema,
same model file by SHA-256, same ``top_k`` and thresholds, same class rules and class options)
and raises
:class:`OutputMismatchError` on any difference, then returns a writer whose ``done`` set holds
the paths already recorded; the caller skips them. A changed file at the same model path counts
as a different model: mixing two models' tags in one file would be silent corruption.

Every :meth:`TagWriter.write` appends whole records, then flushes and ``fsync``\\ s, so a
``kill -9`` loses at most the batch being written. That batch may be half written: a JSONL or
CSV file whose last line has no newline is truncated back to its last complete record on
resume, with a warning (no record ever contains a raw line break, so a missing final newline
is exactly a torn record). A malformed line anywhere else is an error naming the line: the file
was edited, and guessing would risk losing records. Failed images count as done: a resume does
not retry them (tag them into a new file to retry). Records are keyed by ``path`` (the display
path), so two raw names that display the same (``b"\\xff"`` vs a literal backslash-x-f-f) would
count as one on resume.

Parquet files cannot be appended to. During a run the records go to a JSONL sidecar
``FILE.partial.jsonl`` (same header, same torn-line handling); :meth:`TagWriter.close` after a
complete run merges an existing ``FILE`` (from an earlier run), then the sidecar, into a
temporary file, ``fsync``\\ s it and ``os.replace``\\ s it onto ``FILE`` (readers never see a
half-written Parquet), and only then deletes the sidecar. A crash between the two steps leaves
records in both; the merge keeps the first copy of each path, so nothing is duplicated. A crash
during the merge leaves a ``.FILE.*.tmp`` that the next run deletes. An interrupted run
(Ctrl-C, an error) keeps the sidecar and does not touch ``FILE``.

Order: records are written in input order (sorted, see :mod:`attrtag.tag_inputs`) and a resume
appends the images not yet done in that order, so a killed-and-resumed run produces the same
records in the same order as an uninterrupted run over the same inputs. Inputs added between
runs are appended after the existing records (not merged into sorted position).
"""
from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import logging
import math
import os
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .errors import AttrtagError, SchemaError
from .schema import Schema
from .zeroshot_tags import CLASS_FIELDS, ClassTagging

_logger = logging.getLogger(__name__)

#: One output record, in the form documented in the module docstring.
Record = dict[str, Any]

FORMATS = ("jsonl", "csv", "parquet")
HEADER_KEY = "_attrtag"
FORMAT_VERSION = 2  # 2: class fields (files without them are written as version 1)
PROB_DECIMALS = 6

_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_FIXED_COLUMNS = ("path", "uncertain", "error", "message")


class OutputError(AttrtagError, ValueError):
    """An output file cannot be used: unknown format, unreadable, or not an attrtag output."""


class OutputMismatchError(OutputError):
    """Resuming into an output that a different model, schema or setting produced."""


# -- layout ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordLayout:
    """How probabilities become records and records become flat columns.

    Attributes:
        schema: the model's groups and values (the record's group order).
        top_k: keep only the ``k`` most probable values in ``<group>_probs`` (None: all).
        thresholds: group -> minimum top probability; groups below it are listed in
            ``uncertain``. Empty: no ``uncertain`` field at all.
        classes: zero-shot class rules and options; None: no class fields.
    """

    schema: Schema
    top_k: int | None = None
    thresholds: Mapping[str, float] = field(default_factory=dict)
    classes: ClassTagging | None = None

    def __post_init__(self) -> None:
        if self.top_k is not None and self.top_k < 1:
            raise OutputError(f"--top-k must be at least 1, got {self.top_k}")
        for g, t in self.thresholds.items():
            if g not in self.schema:
                raise OutputError(f"--threshold {g}={t}: unknown group '{g}' (groups: {', '.join(self.schema.names)})")
            if not 0.0 <= t <= 1.0:
                raise OutputError(f"--threshold {g}={t}: a threshold is a probability between 0 and 1")
        for g in self.schema:
            for name in (g.name, *g.values):
                if any(c in name for c in "\r\n"):
                    # CSV torn-row detection relies on every row being one line.
                    raise OutputError(
                        f"schema group '{g.name}': {name!r} contains a line break; rename it in the schema"
                    )
        taken = set(_FIXED_COLUMNS) | (set(CLASS_FIELDS) if self.classes is not None else set())
        for g in self.schema.names:
            for col in (g, f"{g}_prob", f"{g}_probs"):
                if col in taken:
                    raise OutputError(
                        f"schema group '{g}' gives output column '{col}', which is already used"
                        + (" by the class fields of --rules" if col in CLASS_FIELDS else "")
                        + "; rename the group in the schema and retrain/re-export"
                    )
                taken.add(col)
        if self.classes is not None:
            self.classes.check(self.schema)

    @cached_property  # read for every record written
    def columns(self) -> tuple[str, ...]:
        """Flat column names in order (CSV header, Parquet schema, TagWorker output)."""
        cols = ["path"]
        for g in self.schema.names:
            cols += [g, f"{g}_prob", f"{g}_probs"]
        if self.thresholds:
            cols.append("uncertain")
        if self.classes is not None:
            cols += CLASS_FIELDS
        return (*cols, "error", "message")

    def prediction_records(self, paths: Sequence[str], probs: Mapping[str, np.ndarray]) -> list[Record]:
        """Records for images that were tagged.

        Args:
            paths: display paths, one per row.
            probs: group -> ``[B, n_values]`` probabilities, rows in ``paths`` order.

        Returns:
            One record per path, in order.
        """
        records: list[Record] = [{"path": p} for p in paths]
        rounded: dict[str, np.ndarray] = {}
        for group in self.schema:
            p = np.round(np.asarray(probs[group.name], dtype=np.float64), PROB_DECIMALS)  # (B, n)
            if p.shape != (len(paths), len(group)):
                want = (len(paths), len(group))
                raise ValueError(f"group '{group.name}': probabilities of shape {p.shape}, expected {want}")
            rounded[group.name] = p
            top = p.argmax(axis=1)
            if self.top_k is None:
                order = np.broadcast_to(np.arange(len(group)), p.shape)
            else:
                # Stable sort of -p: ties keep schema order, so output is deterministic.
                order = np.argsort(-p, axis=1, kind="stable")[:, : self.top_k]
            rows = p.tolist()
            for rec, row, t, idx in zip(records, rows, top.tolist(), order.tolist()):
                rec[group.name] = group.values[t]
                rec[f"{group.name}_prob"] = row[t]
                rec[f"{group.name}_probs"] = {group.values[i]: row[i] for i in idx}
        if self.thresholds:
            for rec in records:
                rec["uncertain"] = [g for g, t in self._threshold_items() if rec[f"{g}_prob"] < t]
        if self.classes is not None:
            # From the rounded distributions the records hold (full even under top_k), so that
            # re-scoring a finished output gives the same fields (attrtag infer).
            for rec, fields in zip(records, self.classes.fields(rounded, self.schema)):
                rec.update(fields)
        return records

    def add_class_fields(self, records: Sequence[Record], source: "RecordLayout") -> list[Record]:
        """Records of ``source`` re-scored with this layout's class rules (``attrtag infer``).

        Args:
            records: records written with layout ``source`` (which must hold full distributions).
            source: the layout of the file the records come from.

        Returns:
            New records: failed images unchanged; tagged ones without any old class fields, plus
            the class fields of :attr:`classes` (when set), in the order :meth:`prediction_records`
            writes them.
        """
        out = [r if "error" in r else {k: v for k, v in r.items() if k not in CLASS_FIELDS} for r in records]
        tagged = [r for r in out if "error" not in r]
        if self.classes is not None and tagged:
            for rec, fields in zip(tagged, self.classes.fields(source.probabilities(tagged), self.schema)):
                rec.update(fields)
        return out

    def probabilities(self, records: Sequence[Record]) -> dict[str, np.ndarray]:
        """The full distributions held by tagged records, as ``{group: (N, n_values)}``.

        Args:
            records: records of this layout without ``error``.

        Returns:
            float64 arrays, columns in schema value order.

        Raises:
            OutputError: the layout keeps only the top-k values (the distributions are gone), or
                a record lacks a value.
        """
        if self.top_k is not None:
            raise OutputError(
                f"the tags were written with --top-k {self.top_k}, so they hold only the {self.top_k} most "
                "probable values of each group and class scores need all of them; tag again without --top-k"
            )
        out = {}
        for group in self.schema:
            col = f"{group.name}_probs"
            try:
                out[group.name] = np.array(
                    [[r[col][v] for v in group.values] for r in records], dtype=np.float64
                ).reshape(len(records), len(group))
            except (KeyError, TypeError) as err:
                bad = next(r for r in records if not isinstance(r.get(col), dict) or set(r[col]) != set(group.values))
                raise OutputError(
                    f"record '{bad.get('path')}': '{col}' does not hold every value of '{group.name}' ({err}); "
                    "the file was edited or is corrupt"
                ) from None
        return out

    def _threshold_items(self) -> list[tuple[str, float]]:
        return [(g, self.thresholds[g]) for g in self.schema.names if g in self.thresholds]

    @staticmethod
    def error_record(path: str, code: str, message: str) -> Record:
        """The record of an image that could not be tagged.

        Args:
            path: display path.
            code: short reason code (``attrtag.images.REASONS``).
            message: human-readable explanation; folded onto one line.

        Returns:
            ``{"path", "error", "message"}``.
        """
        # One line: CSV torn-row detection and line-based tools rely on it.
        return {"path": path, "error": code, "message": " ".join(str(message).split())}

    def to_flat(self, record: Record) -> dict[str, Any]:
        """Record -> ``{column: str | float | None}`` (mappings and lists as JSON strings).

        Args:
            record: a record as made by this layout.

        Returns:
            One value per :attr:`columns` entry.
        """
        flat: dict[str, Any] = dict.fromkeys(self.columns)
        for k, v in record.items():
            if k not in flat:
                raise ValueError(f"record field '{k}' is not a column of this layout")
            flat[k] = json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v
        return flat

    def from_flat(self, row: Mapping[str, Any]) -> Record:
        """Flat row (CSV strings or Parquet values) -> record; inverse of :meth:`to_flat`.

        Args:
            row: column -> value; empty strings and None both mean "no value".

        Returns:
            The record.
        """
        def get(col: str) -> Any:
            v = row.get(col)
            return None if v is None or v == "" or (isinstance(v, float) and math.isnan(v)) else v

        path = str(get("path") or "")
        if get("error") is not None:
            return self.error_record(path, str(get("error")), str(get("message") or ""))
        rec: Record = {"path": path}
        for g in self.schema.names:
            rec[g] = str(get(g))
            rec[f"{g}_prob"] = float(get(f"{g}_prob"))
            rec[f"{g}_probs"] = json.loads(get(f"{g}_probs"))
        if self.thresholds:
            rec["uncertain"] = json.loads(get("uncertain") or "[]")
        if self.classes is not None:
            rec["class"] = str(get("class"))
            rec["class_prob"] = float(get("class_prob"))
            rec["classes"] = json.loads(get("classes"))
            rec["class_explanation"] = json.loads(get("class_explanation"))
        return rec


# -- header ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputMeta:
    """What made an output file; stored with it and compared on resume.

    Attributes:
        layout: schema, top_k and thresholds.
        model: the model file's name, for messages.
        model_sha256: hex SHA-256 of the model file: the model's identity.
    """

    layout: RecordLayout
    model: str
    model_sha256: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON header (``{"format_version", "model", ...}``)."""
        classes = self.layout.classes
        return {
            # Files without class fields keep version 1: older attrtag versions read them.
            "format_version": FORMAT_VERSION if classes is not None else 1,
            "model": self.model,
            "model_sha256": self.model_sha256,
            "schema": self.layout.schema.to_dict(),
            "top_k": self.layout.top_k,
            "thresholds": {g: t for g, t in self.layout._threshold_items()},
            "classes": classes.to_dict() if classes is not None else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str) -> "OutputMeta":
        """Inverse of :meth:`to_dict`; ``source`` names the file in errors."""
        try:
            if int(d.get("format_version", 0)) > FORMAT_VERSION:
                raise OutputError(
                    f"{source}: written by a newer attrtag (format {d['format_version']}); upgrade attrtag"
                )
            schema = Schema.from_dict(d["schema"], source=source)
            classes = d.get("classes")
            layout = RecordLayout(
                schema,
                top_k=d.get("top_k"),
                thresholds={str(g): float(t) for g, t in (d.get("thresholds") or {}).items()},
                classes=ClassTagging.from_dict(classes, schema, source=source) if classes is not None else None,
            )
            return cls(layout, str(d["model"]), str(d["model_sha256"]))
        except (KeyError, TypeError, ValueError, SchemaError) as err:
            if isinstance(err, OutputError):
                raise
            raise OutputError(
                f"{source}: unreadable attrtag header ({err}); delete the file or use another --out"
            ) from None

    def check_resumable(self, found: "OutputMeta", *, source: str) -> None:
        """Raise :class:`OutputMismatchError` unless ``found`` (the file's header) matches this run.

        Args:
            found: the header read from the existing output.
            source: the output file, for the message.
        """
        fix = "use another --out, or --overwrite to start it again"
        try:
            found.layout.schema.check_same(self.layout.schema, what=f"{source} was written with another schema")
        except SchemaError as err:
            raise OutputMismatchError(f"{err}; {fix}") from None
        if found.model_sha256 != self.model_sha256:
            raise OutputMismatchError(
                f"{source} was written by model '{found.model}' (sha256 {found.model_sha256[:12]}), this run uses "
                f"'{self.model}' (sha256 {self.model_sha256[:12]}); {fix}"
            )
        for what, old, new in (
            ("--top-k", found.layout.top_k, self.layout.top_k),
            ("--threshold", dict(found.layout.thresholds), dict(self.layout.thresholds)),
        ):
            if old != new:
                raise OutputMismatchError(f"{source} was written with {what} {old}, this run uses {new}; {fix}")
        old_c, new_c = found.layout.classes, self.layout.classes
        if old_c != new_c:
            raise OutputMismatchError(
                f"{source} was written with {_describe_classes(old_c)}, this run uses {_describe_classes(new_c)}; {fix}"
            )


def _describe_classes(classes: ClassTagging | None) -> str:
    return "no class rules" if classes is None else f"class rules: {classes.describe()}"


def model_fingerprint(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a model file, its identity in output headers.

    Args:
        path: the ``.onnx`` file or checkpoint.

    Returns:
        64 hex digits.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def output_format(path: str | os.PathLike[str], fmt: str | None = None) -> str:
    """The output format: ``fmt`` when given, else from the extension, else JSONL.

    Args:
        path: the output file.
        fmt: ``jsonl``, ``csv`` or ``parquet``, or None to use the extension.

    Returns:
        One of :data:`FORMATS`.
    """
    if fmt is not None:
        if fmt not in FORMATS:
            raise OutputError(f"--format {fmt}: not one of {', '.join(FORMATS)}")
        return fmt
    ext = Path(path).suffix.lower()
    if ext not in _EXTENSIONS:
        _logger.info("%s: writing JSONL (extension '%s' not recognised; pass --format to choose)", path, ext)
        return "jsonl"
    return _EXTENSIONS[ext]


# -- writers --------------------------------------------------------------------------------


class TagWriter(ABC):
    """Appends record batches durably to one output file; see the module docstring.

    Attributes:
        path: the output file.
        meta: this run's header.
        done: display paths already in the output when it was opened (resume skips them).
    """

    def __init__(self, path: Path, meta: OutputMeta) -> None:
        self.path = path
        self.meta = meta
        self.done: set[str] = set()

    @abstractmethod
    def write(self, records: Sequence[Record]) -> None:
        """Append ``records`` and make them durable (flush + fsync) before returning."""

    def close(self, *, complete: bool = True) -> None:
        """Release the file; ``complete=False`` after an error (Parquet then keeps its sidecar)."""

    def __enter__(self) -> "TagWriter":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.close(complete=exc_type is None)


def open_output(
    path: str | os.PathLike[str], meta: OutputMeta, *, fmt: str | None = None, overwrite: bool = False
) -> TagWriter:
    """Open an output for appending, resuming it when it exists.

    Args:
        path: the output file; its folder is created.
        meta: this run's header, checked against an existing file's.
        fmt: format override (default: from the extension).
        overwrite: delete an existing output (and its sidecars) and start again.

    Returns:
        A writer whose ``done`` holds the paths already recorded.

    Raises:
        OutputMismatchError: the existing output was made by another model/schema/settings.
        OutputError: the existing file is not an attrtag output, or is corrupt before its end.
    """
    path = Path(path)
    kind = output_format(path, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for p in (path, _csv_meta_path(path), _partial_path(path)):
            p.unlink(missing_ok=True)
    if kind == "jsonl":
        return _JsonlWriter(path, meta)
    if kind == "csv":
        return _CsvWriter(path, meta)
    return _ParquetWriter(path, meta)


def _fsync_dir(folder: Path) -> None:
    # Makes a created or renamed directory entry durable; a no-op where directories cannot be
    # opened (Windows).
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _append_durably(f: Any, data: bytes) -> None:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def _repair_tail(path: Path, *, repair: bool) -> None:
    """Cut a torn last line (no trailing newline) off ``path``, or refuse when not ``repair``.

    No record ever holds a raw line break (JSON escapes them; CSV cells are one line, see
    :meth:`RecordLayout.error_record` and ``display_path``), so "the file does not end with a
    newline" is exactly "the last record was being written when the run died".
    """
    size = path.stat().st_size
    end = size
    with open(path, "rb") as f:
        # Scan backwards for the last newline: the torn part is at most one batch.
        while end > 0:
            start = max(0, end - (1 << 16))
            f.seek(start)
            chunk = f.read(end - start)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                end = start + nl + 1
                break
            end = start
    if end == size:
        return
    if not repair:
        raise OutputError(f"{path}: the last record is incomplete (an interrupted run); rerun the command to repair it")
    _logger.warning("%s: removing an incomplete last record (%d bytes) left by an interrupted run", path, size - end)
    with open(path, "r+b") as f:
        f.truncate(end)
        f.flush()
        os.fsync(f.fileno())


class _JsonlWriter(TagWriter):
    def __init__(self, path: Path, meta: OutputMeta) -> None:
        super().__init__(path, meta)
        if path.exists() and path.stat().st_size > 0:
            found, paths = _scan_jsonl(path, repair=True, keep=lambda r: r["path"])
            if found is not None:
                meta.check_resumable(found, source=str(path))
                self.done = set(paths)
        # Append mode: every write lands at the end of the file.
        self._f = open(path, "ab")
        if self._f.tell() == 0:
            header = json.dumps({HEADER_KEY: meta.to_dict()}, ensure_ascii=False) + "\n"
            _append_durably(self._f, header.encode("utf-8"))
            _fsync_dir(path.parent)

    def write(self, records: Sequence[Record]) -> None:
        if records:
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
            _append_durably(self._f, text.encode("utf-8"))

    def close(self, *, complete: bool = True) -> None:
        if not self._f.closed:
            self._f.close()


def _scan_jsonl(
    path: Path, *, repair: bool, keep: Callable[[Record], Any] = lambda r: r
) -> tuple[OutputMeta | None, list[Any]]:
    """Header and ``keep(record)`` of every record of a JSONL output, streamed line by line.

    Returns ``(None, [])`` when the file is empty (or held only a torn header, now cut off).
    """
    _repair_tail(path, repair=repair)
    with open(path, "rb") as f:
        first = f.readline()
        if not first:
            return None, []
        try:
            head = json.loads(first)
        except ValueError:
            head = None
        if not isinstance(head, dict) or HEADER_KEY not in head:
            raise OutputError(
                f"{path}: not an attrtag tag output (no '{HEADER_KEY}' header on line 1); "
                "choose another --out, or --overwrite to replace it"
            )
        meta = OutputMeta.from_dict(head[HEADER_KEY], source=str(path))
        kept = []
        for n, line in enumerate(f, start=2):
            try:
                rec = json.loads(line)
            except ValueError as err:
                raise OutputError(f"{path}:{n}: not a JSON record ({err}); the file was edited or is corrupt") from None
            if not isinstance(rec, dict) or "path" not in rec:
                raise OutputError(f"{path}:{n}: record without 'path'; the file was edited or is corrupt")
            kept.append(keep(rec))
    return meta, kept


def _csv_meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")


def _csv_text(rows: Iterable[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for row in rows:
        w.writerow(["" if v is None else repr(v) if isinstance(v, float) else v for v in row])
    return buf.getvalue()


class _CsvWriter(TagWriter):
    def __init__(self, path: Path, meta: OutputMeta) -> None:
        super().__init__(path, meta)
        self.columns = meta.layout.columns
        meta_path = _csv_meta_path(path)
        if path.exists() and path.stat().st_size > 0:
            if not meta_path.exists():
                raise OutputError(
                    f"{path}: no {meta_path.name} next to it, so it is not an attrtag output (or the sidecar was "
                    "lost); choose another --out, or --overwrite to replace it"
                )
            found = OutputMeta.from_dict(_read_json(meta_path), source=str(meta_path))
            meta.check_resumable(found, source=str(path))
            self.done = set(_scan_csv(path, self.columns, repair=True, keep=lambda row: row["path"]))
        else:
            _write_atomically(meta_path, (json.dumps(meta.to_dict(), ensure_ascii=False, indent=1) + "\n").encode())
        self._f = open(path, "ab")
        if self._f.tell() == 0:  # new, or only a torn header row was there
            _append_durably(self._f, _csv_text([self.columns]).encode("utf-8"))
            _fsync_dir(path.parent)

    def write(self, records: Sequence[Record]) -> None:
        if records:
            flat = (self.meta.layout.to_flat(r) for r in records)
            _append_durably(self._f, _csv_text([row[c] for c in self.columns] for row in flat).encode("utf-8"))

    def close(self, *, complete: bool = True) -> None:
        if not self._f.closed:
            self._f.close()


def _scan_csv(
    path: Path, columns: Sequence[str], *, repair: bool, keep: Callable[[dict[str, str]], Any] = lambda r: r
) -> list[Any]:
    """``keep(row)`` of every row of a CSV output, streamed; a torn last row is cut off first."""
    _repair_tail(path, repair=repair)
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, strict=True)
        try:
            header = next(reader, None)
            if header is None:
                return []
            if header != list(columns):
                raise OutputMismatchError(
                    f"{path}: columns {header} differ from this run's {list(columns)}; "
                    "use another --out, or --overwrite to start it again"
                )
            kept = []
            for row in reader:
                if len(row) != len(columns):
                    raise OutputError(
                        f"{path}:{reader.line_num}: row has {len(row)} cells, expected {len(columns)}; "
                        "the file was edited or is corrupt"
                    )
                kept.append(keep(dict(zip(columns, row))))
        except (csv.Error, UnicodeDecodeError) as err:
            raise OutputError(
                f"{path}:{reader.line_num}: unreadable CSV ({err}); the file was edited or is corrupt"
            ) from None
    return kept


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise OutputError(
            f"{path}: cannot read it ({err}); delete the output and its sidecars to start again"
        ) from None


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            _append_durably(f, data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial.jsonl")


def _import_pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401  (makes pyarrow.parquet an attribute)
    except ImportError:
        raise OutputError(
            "Parquet output needs pyarrow: pip install 'attrtag[parquet]' (or write .jsonl/.csv)"
        ) from None
    return pyarrow


def _arrow_schema(meta: OutputMeta) -> Any:
    pa = _import_pyarrow()
    prob_columns = {f"{g}_prob" for g in meta.layout.schema.names} | {"class_prob"}
    fields = [pa.field(c, pa.float64() if c in prob_columns else pa.string()) for c in meta.layout.columns]
    return pa.schema(fields, metadata={"attrtag": json.dumps(meta.to_dict(), ensure_ascii=False)})


def _parquet_meta(path: Path) -> OutputMeta:
    pa = _import_pyarrow()
    try:
        raw = (pa.parquet.read_schema(path).metadata or {}).get(b"attrtag")
    except (OSError, pa.ArrowException) as err:
        raise OutputError(f"{path}: cannot read it as Parquet ({err}); use another --out, or --overwrite") from None
    if raw is None:
        raise OutputError(
            f"{path}: not an attrtag tag output (no 'attrtag' metadata); use another --out, or --overwrite"
        )
    return OutputMeta.from_dict(json.loads(raw), source=str(path))


class _ParquetWriter(TagWriter):
    #: Rows per row group when merging the sidecar into the final file (bounded memory).
    CHUNK = 50_000

    def __init__(self, path: Path, meta: OutputMeta) -> None:
        super().__init__(path, meta)
        pa = _import_pyarrow()  # fail before any work when pyarrow is missing
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            stale.unlink(missing_ok=True)  # a merge killed half-way; the sidecar still has its rows
        final_paths: list[str] = []
        if path.exists():
            meta.check_resumable(_parquet_meta(path), source=str(path))
            final_paths = pa.parquet.read_table(path, columns=["path"]).column("path").to_pylist()
        self._partial = _JsonlWriter(_partial_path(path), meta)
        self._merge_needed = bool(self._partial.done) or not path.exists()
        self.done = set(final_paths) | self._partial.done

    def write(self, records: Sequence[Record]) -> None:
        if records:
            self._merge_needed = True
        self._partial.write(records)

    def close(self, *, complete: bool = True) -> None:
        self._partial.close()
        if not complete:
            return  # the sidecar holds the work; the next run resumes from it
        if self._merge_needed:
            self._merge()
        self._partial.path.unlink(missing_ok=True)

    def _merge(self) -> None:
        """Existing Parquet rows, then the sidecar's new ones, into a temp file; then replace."""
        pa = _import_pyarrow()
        schema = _arrow_schema(self.meta)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        try:
            seen: set[str] = set()
            with pa.parquet.ParquetWriter(tmp, schema) as out:
                if self.path.exists():
                    for batch in pa.parquet.ParquetFile(self.path).iter_batches(batch_size=self.CHUNK):
                        table = pa.Table.from_batches([batch]).cast(schema)
                        seen.update(table.column("path").to_pylist())
                        out.write_table(table)
                _, records = _scan_jsonl(self._partial.path, repair=False)
                rows = []
                for rec in records:
                    if rec["path"] in seen:  # merged already by a run killed before deleting the sidecar
                        continue
                    seen.add(rec["path"])
                    rows.append(self.meta.layout.to_flat(rec))
                    if len(rows) == self.CHUNK:
                        out.write_table(pa.Table.from_pylist(rows, schema=schema))
                        rows = []
                if rows or not seen:
                    out.write_table(pa.Table.from_pylist(rows, schema=schema))
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(self.path.parent)


# -- readers --------------------------------------------------------------------------------


def read_output(path: str | os.PathLike[str], *, fmt: str | None = None) -> tuple[OutputMeta, list[Record]]:
    """Read any tag output back as ``(header, records)`` in the record form of this module.

    Args:
        path: a finished output file (a Parquet run still in progress lives in its sidecar).
        fmt: format override (default: from the extension).

    Returns:
        The header and the records in file order.

    Raises:
        OutputError: not an attrtag output, or a JSONL/CSV whose last record is incomplete.
    """
    path = Path(path)
    kind = output_format(path, fmt)
    if kind == "jsonl":
        meta, records = _scan_jsonl(path, repair=False)
        if meta is None:
            raise OutputError(f"{path}: empty file, not an attrtag tag output")
        return meta, records
    if kind == "csv":
        meta = OutputMeta.from_dict(_read_json(_csv_meta_path(path)), source=str(_csv_meta_path(path)))
        return meta, _scan_csv(path, meta.layout.columns, repair=False, keep=meta.layout.from_flat)
    meta = _parquet_meta(path)
    rows = _import_pyarrow().parquet.read_table(path).to_pylist()
    return meta, [meta.layout.from_flat(r) for r in rows]
