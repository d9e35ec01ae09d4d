"""Tag output files: durable JSONL/CSV/Parquet writers that resume, one run at a time.

The formats, where each keeps its header, and the resume and crash guarantees are specified in
``datasets/OUTPUT.md``: every write appends whole records and fsyncs; a torn last line is cut
off on resume; Parquet is written through a JSONL sidecar and replaced atomically at the end.
JSONL and CSV files hold records only, so any reader takes them as they are; their header lives
in ``FILE.meta.json`` beside them. JSONL files written before that (header object on line 1)
are still read and resumed as they are. A writer holds its output's lock (:mod:`.lock`) from
before it touches anything until it is closed: a second writer is refused, never interleaved.
The scanners a resume reads an output with are :mod:`.scan`'s; the readers, :mod:`.stream`.
"""
from __future__ import annotations

import csv
import glob
import io
import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterable, Sequence

from .._files import append_durably, atomic_path, check_output, fsync_dir, write_bytes
from .header import HEADER_KEY, OutputMeta, output_format
from .._lock import OutputLock
from .records import TagRecord
from .scan import import_pyarrow, meta_path, parquet_meta, partial_path, scan_csv, scan_jsonl, sidecar_meta


class TagWriter(ABC):
    """Appends record batches durably to one output file; see the module docstring.

    Attributes:
        path: the output file.
        meta: this run's header (resuming a file: with the file's :attr:`OutputMeta.relative_to`).
        done: display paths already in the output when it was opened (resume skips them).
    """

    def __init__(self, path: Path, meta: OutputMeta) -> None:
        self.path = path
        self.meta = meta
        self.done: set[str] = set()
        self.lock: OutputLock | None = None  # set by open_output; released by close

    @abstractmethod
    def write(self, records: Sequence[TagRecord]) -> None:
        """Append ``records`` and make them durable (flush + fsync) before returning."""

    def close(self, *, complete: bool = True) -> None:
        """Release the file and its lock; ``complete=False`` after an error (Parquet then keeps its sidecar)."""
        try:
            self._close(complete)
        finally:
            if self.lock is not None:
                self.lock.release()

    def _close(self, complete: bool) -> None:
        """Release the file (the format's part of :meth:`close`)."""

    def __enter__(self) -> "TagWriter":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.close(complete=exc_type is None)


def check_out(path: str | os.PathLike[str], fmt: str | None = None) -> str:
    """The format of the output ``path``, once it is known to be writable (before any work).

    Raises:
        OutputError: no format for the name, or a ``fmt`` that contradicts its extension.
        AttrtagError: ``path`` is a folder, lies under a file, or its folder is not writable.
    """
    check_output(path)
    return output_format(path, fmt)


def open_output(
    path: str | os.PathLike[str], meta: OutputMeta, *, fmt: str | None = None, overwrite: bool = False
) -> TagWriter:
    """Open an output for appending, resuming it when it exists; the writer holds its lock.

    Args:
        path: the output file; its folder is created.
        meta: this run's header, checked against an existing file's.
        fmt: format override (default: from the extension).
        overwrite: delete an existing output (and its sidecars) and start again.

    Returns:
        A writer whose ``done`` holds the paths already recorded.

    Raises:
        OutputError: another run is writing ``path`` (nothing is touched then), the existing
            file is not an attrtag output, or is corrupt before its end.
        OutputMismatchError: the existing output was made by another model/schema/settings.
    """
    path = Path(path)
    kind = check_out(path, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = OutputLock(path).acquire()  # before the overwrite: another run's output is never deleted
    try:
        if overwrite:
            for p in (path, meta_path(path), partial_path(path)):
                p.unlink(missing_ok=True)
        writer = {"jsonl": _JsonlWriter, "csv": _CsvWriter}.get(kind, _ParquetWriter)(path, meta)
    except BaseException:
        lock.release()
        raise
    writer.lock = lock
    return writer


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
            found, paths = scan_jsonl(path, not inline_header, repair=True, keep=lambda r: r["path"])
            if found is not None:
                meta.check_resumable(found, source=str(path))
                self.meta = meta = meta.resumed_from(found)
                self.done = set(paths)
        if found is None and not inline_header:
            # Before the first record: a reader never meets records without their header. A stale
            # sidecar of an empty output describes no record and is replaced.
            _write_meta(meta_path(path), meta)
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

    def _close(self, complete: bool) -> None:
        if not self._f.closed:
            self._f.close()


def _write_meta(path: Path, meta: OutputMeta) -> None:
    write_bytes(path, (json.dumps(meta.to_dict(), ensure_ascii=False, indent=1) + "\n").encode())


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
            found = sidecar_meta(path)
            meta.check_resumable(found, source=str(path))
            self.meta = meta.resumed_from(found)
            self.done = set(scan_csv(path, self.columns, repair=True, keep=lambda row: row["path"]))
        else:
            _write_meta(meta_path(path), meta)
        self._f = open(path, "ab")
        if self._f.tell() == 0:  # new, or only a torn header row was there
            append_durably(self._f, _csv_text([self.columns]).encode("utf-8"))
            fsync_dir(path.parent)

    def write(self, records: Sequence[TagRecord]) -> None:
        if records:
            flat = (self.meta.layout.to_flat(r) for r in records)
            append_durably(self._f, _csv_text([row[c] for c in self.columns] for row in flat).encode("utf-8"))

    def _close(self, complete: bool) -> None:
        if not self._f.closed:
            self._f.close()


def _arrow_schema(meta: OutputMeta) -> Any:
    pa = import_pyarrow()
    prob_columns = {f"{g}_prob" for g in meta.layout.schema.names} | {"class_prob"}
    fields = [pa.field(c, pa.float64() if c in prob_columns else pa.string()) for c in meta.layout.columns]
    return pa.schema(fields, metadata={"attrtag": json.dumps(meta.to_dict(), ensure_ascii=False)})


class _ParquetWriter(TagWriter):
    #: Rows per row group when merging the sidecar into the final file (bounded memory).
    CHUNK = 50_000

    def __init__(self, path: Path, meta: OutputMeta) -> None:
        super().__init__(path, meta)
        pa = import_pyarrow()  # fail before any work when pyarrow is missing
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            stale.unlink(missing_ok=True)  # a merge killed half-way; the sidecar still has its rows
        final_paths: list[str] = []
        if path.exists():
            found = parquet_meta(path)
            meta.check_resumable(found, source=str(path))
            meta = meta.resumed_from(found)
            final_paths = pa.parquet.read_table(path, columns=["path"]).column("path").to_pylist()
        self._partial = _JsonlWriter(partial_path(path), meta, inline_header=True)
        self.meta = self._partial.meta  # the file's own base, where a killed run's journal began it
        self._merge_needed = bool(self._partial.done) or not path.exists()
        self.done = set(final_paths) | self._partial.done

    def write(self, records: Sequence[TagRecord]) -> None:
        if records:
            self._merge_needed = True
        self._partial.write(records)

    def _close(self, complete: bool) -> None:
        self._partial.close()
        if not complete:
            return  # the sidecar holds the work; the next run resumes from it
        if self._merge_needed:
            self._merge()
        self._partial.path.unlink(missing_ok=True)

    def _merge(self) -> None:
        """Existing Parquet rows, then the sidecar's new ones, into a temp file; then replace."""
        pa = import_pyarrow()
        schema = _arrow_schema(self.meta)
        with atomic_path(self.path) as tmp:
            seen: set[str] = set()
            with pa.parquet.ParquetWriter(tmp, schema) as out:
                if self.path.exists():
                    for batch in pa.parquet.ParquetFile(self.path).iter_batches(batch_size=self.CHUNK):
                        table = pa.Table.from_batches([batch]).cast(schema)
                        seen.update(table.column("path").to_pylist())
                        out.write_table(table)
                _, records = scan_jsonl(self._partial.path, False, repair=False)
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
