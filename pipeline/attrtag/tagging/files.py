"""Tag output files: durable JSONL/CSV/Parquet writers that resume, and readers.

The formats, where each keeps its header, and the resume and crash guarantees are specified in
``datasets/OUTPUT.md``: every write appends whole records and fsyncs; a torn last line is cut
off on resume; Parquet is written through a JSONL sidecar and replaced atomically at the end.
JSONL and CSV files hold records only, so any reader takes them as they are; their header lives
in ``FILE.meta.json`` beside them. JSONL files written before that (header object on line 1)
are still read and resumed as they are.
"""
from __future__ import annotations

import csv
import glob
import io
import itertools
import json
import logging
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .._files import append_durably, atomic_path, fsync_dir, write_bytes
from ..errors import OutputError, OutputMismatchError
from .header import HEADER_KEY, OutputMeta, output_format
from .records import TagRecord

_logger = logging.getLogger(__name__)


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
    def write(self, records: Sequence[TagRecord]) -> None:
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
        for p in (path, _meta_path(path), _partial_path(path)):
            p.unlink(missing_ok=True)
    if kind == "jsonl":
        return _JsonlWriter(path, meta)
    if kind == "csv":
        return _CsvWriter(path, meta)
    return _ParquetWriter(path, meta)


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
        with open(path, "rb") as f:  # the torn line's number, for the message (an error path: one read)
            line = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b"")) + 1
        raise OutputError(
            f"{path}:{line}: the last record is incomplete (an interrupted run); rerun the tagging command to repair it"
        )
    _logger.warning("%s: removing an incomplete last record (%d bytes) left by an interrupted run", path, size - end)
    with open(path, "r+b") as f:
        f.truncate(end)
        f.flush()
        os.fsync(f.fileno())


class _JsonlWriter(TagWriter):
    """JSONL records, header in ``FILE.meta.json`` (``inline_header``: on line 1, see below).

    ``inline_header`` is for the Parquet run journal ``FILE.partial.jsonl``: an internal file
    that attrtag alone writes, reads and deletes, where one file holding both header and records
    leaves nothing to get out of step. Files in the old layout (header on line 1) are resumed in
    that layout, never rewritten.
    """

    def __init__(self, path: Path, meta: OutputMeta, *, inline_header: bool = False) -> None:
        super().__init__(path, meta)
        found = None
        if path.exists() and path.stat().st_size > 0:
            found, paths = _scan_jsonl(path, not inline_header, repair=True, keep=lambda r: r["path"])
            if found is not None:
                meta.check_resumable(found, source=str(path))
                self.done = set(paths)
        if found is None and not inline_header:
            # Before the first record: a reader never meets records without their header. A stale
            # sidecar of an empty output describes no record and is replaced.
            _write_meta(_meta_path(path), meta)
        # Append mode: every write lands at the end of the file.
        self._f = open(path, "ab")
        if self._f.tell() == 0:
            if inline_header:
                header = json.dumps({HEADER_KEY: meta.to_dict()}, ensure_ascii=False) + "\n"
                append_durably(self._f, header.encode("utf-8"))
            fsync_dir(path.parent)

    def write(self, records: Sequence[TagRecord]) -> None:
        if records:
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
            append_durably(self._f, text.encode("utf-8"))

    def close(self, *, complete: bool = True) -> None:
        if not self._f.closed:
            self._f.close()


def _header_line(line: bytes) -> dict[str, Any] | None:
    """The header of an in-file header line (``{"_attrtag": {...}}``), else None."""
    try:
        head = json.loads(line)
    except ValueError:
        return None
    return head[HEADER_KEY] if isinstance(head, dict) and isinstance(head.get(HEADER_KEY), dict) else None


def _scan_jsonl(
    path: Path, sidecar: bool, *, repair: bool, keep: Callable[[TagRecord], Any] = lambda r: r
) -> tuple[OutputMeta | None, list[Any]]:
    """Header and ``keep(record)`` of every record of a JSONL output, streamed line by line.

    The header is line 1 when that line is a header object (the old layout, and the Parquet
    journal), else ``FILE.meta.json`` (only with ``sidecar``). Returns ``(None, [])`` when the file
    is empty (or held only a torn first line, now cut off).
    """
    _repair_tail(path, repair=repair)
    with open(path, "rb") as f:
        first = f.readline()
        if not first:
            return None, []
        inline = _header_line(first)
        if inline is not None:
            meta = OutputMeta.from_dict(inline, source=str(path))
            lines: Iterable[tuple[int, bytes]] = enumerate(f, start=2)
        elif not sidecar:
            raise OutputError(
                f"{path}:1: not an attrtag run journal (no '{HEADER_KEY}' header on line 1); delete it to start again"
            )
        else:
            meta = _sidecar_meta(path)
            lines = enumerate(itertools.chain([first], f), start=1)
        kept = []
        for n, line in lines:
            try:
                rec = json.loads(line)
            except ValueError as err:
                raise OutputError(f"{path}:{n}: not a JSON record ({err}); the file was edited or is corrupt") from None
            if not isinstance(rec, dict) or "path" not in rec:
                got = next(iter(rec), None) if isinstance(rec, dict) else type(rec).__name__
                raise OutputError(
                    f"{path}:{n}: not a tag record (no 'path'; first key {got!r}); the file was edited, is corrupt "
                    "or is not an attrtag tag output"
                )
            kept.append(keep(rec))
    return meta, kept


def _meta_path(path: Path) -> Path:
    """``FILE.meta.json``: the header of a JSONL or CSV output."""
    return path.with_name(path.name + ".meta.json")


def _write_meta(meta_path: Path, meta: OutputMeta) -> None:
    write_bytes(meta_path, (json.dumps(meta.to_dict(), ensure_ascii=False, indent=1) + "\n").encode())


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
        if path.exists() and path.stat().st_size > 0:
            found = _sidecar_meta(path)
            meta.check_resumable(found, source=str(path))
            self.done = set(_scan_csv(path, self.columns, repair=True, keep=lambda row: row["path"]))
        else:
            _write_meta(_meta_path(path), meta)
        self._f = open(path, "ab")
        if self._f.tell() == 0:  # new, or only a torn header row was there
            append_durably(self._f, _csv_text([self.columns]).encode("utf-8"))
            fsync_dir(path.parent)

    def write(self, records: Sequence[TagRecord]) -> None:
        if records:
            flat = (self.meta.layout.to_flat(r) for r in records)
            append_durably(self._f, _csv_text([row[c] for c in self.columns] for row in flat).encode("utf-8"))

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
                    "use another `out`, or `overwrite=True` to start it again"
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


def _sidecar_meta(path: Path) -> OutputMeta:
    """The header of a JSONL or CSV output, from ``FILE.meta.json``."""
    meta_path = _meta_path(path)
    if not meta_path.exists():
        raise OutputError(
            f"{path}: no {meta_path.name} next to it, so it is not an attrtag tag output (or its header file "
            "was lost); choose another `out`, or `overwrite=True` to replace it"
        )
    return OutputMeta.from_dict(_read_json(meta_path), source=str(meta_path))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise OutputError(
            f"{path}: cannot read it ({err}); delete the output and its sidecars to start again"
        ) from None


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
        raise OutputError(f"{path}: cannot read it as Parquet ({err}); use another `out`, or `overwrite=True`") from None
    if raw is None:
        raise OutputError(
            f"{path}: not an attrtag tag output (no 'attrtag' metadata); use another `out`, or `overwrite=True`"
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
        self._partial = _JsonlWriter(_partial_path(path), meta, inline_header=True)
        self._merge_needed = bool(self._partial.done) or not path.exists()
        self.done = set(final_paths) | self._partial.done

    def write(self, records: Sequence[TagRecord]) -> None:
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
        with atomic_path(self.path) as tmp:
            seen: set[str] = set()
            with pa.parquet.ParquetWriter(tmp, schema) as out:
                if self.path.exists():
                    for batch in pa.parquet.ParquetFile(self.path).iter_batches(batch_size=self.CHUNK):
                        table = pa.Table.from_batches([batch]).cast(schema)
                        seen.update(table.column("path").to_pylist())
                        out.write_table(table)
                _, records = _scan_jsonl(self._partial.path, False, repair=False)
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
