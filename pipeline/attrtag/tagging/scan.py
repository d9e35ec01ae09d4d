"""Reading what the writers of :mod:`.files` write: torn tails, JSONL lines, CSV rows, headers.

Shared by the writers (a resume reads an output's header and paths before appending) and the
readers of :mod:`.stream`. Every problem is one :class:`OutputError` naming the file, and the
line where there is one. Where each format keeps its header is specified in ``datasets/OUTPUT.md``.
"""
from __future__ import annotations

import csv
import itertools
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from ..errors import OutputError, OutputMismatchError
from .header import HEADER_KEY, OutputMeta
from .records import TagRecord

_logger = logging.getLogger(__name__)


#: What to do about an output that cannot be resumed, and about a tag file that cannot be read.
RESUME_FIX = "choose another `out`, or `overwrite=True` to replace it"
READ_FIX = "give the file `attrtag tag` wrote, with its header beside it, or tag the images again"


def meta_path(path: Path) -> Path:
    """``FILE.meta.json``: the header of a JSONL or CSV output."""
    return path.with_name(path.name + ".meta.json")


def partial_path(path: Path) -> Path:
    """``FILE.partial.jsonl``: the journal of a Parquet output until its run ends."""
    return path.with_name(path.name + ".partial.jsonl")


def repair_tail(path: Path, *, repair: bool) -> None:
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


def header_line(line: bytes) -> dict[str, Any] | None:
    """The header of an in-file header line (``{"_attrtag": {...}}``), else None."""
    try:
        head = json.loads(line)
    except ValueError:
        return None
    return head[HEADER_KEY] if isinstance(head, dict) and isinstance(head.get(HEADER_KEY), dict) else None


def jsonl_header(path: Path, sidecar: bool, *, fix: str = RESUME_FIX) -> tuple[OutputMeta | None, int]:
    """The header of a JSONL output and the number of its first record line.

    The header is line 1 when that line is a header object (the old layout, and the Parquet
    journal), else ``FILE.meta.json`` (only with ``sidecar``). ``(None, 1)``: the file is empty.
    """
    with open(path, "rb") as f:
        first = f.readline()
    if not first:
        return None, 1
    inline = header_line(first)
    if inline is not None:
        return OutputMeta.from_dict(inline, source=str(path)), 2
    if not sidecar:
        raise OutputError(
            f"{path}:1: not an attrtag run journal (no '{HEADER_KEY}' header on line 1); delete it to start again"
        )
    return sidecar_meta(path, fix=fix), 1


def jsonl_records(path: Path, start: int = 1) -> Iterator[tuple[int, TagRecord]]:
    """``(line number, record)`` of every line from ``start`` on; each has a ``path``."""
    with open(path, "rb") as f:
        for n, line in enumerate(itertools.islice(f, start - 1, None), start=start):
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
            yield n, rec


def scan_jsonl(
    path: Path, sidecar: bool, *, repair: bool, keep: Callable[[TagRecord], Any] = lambda r: r
) -> tuple[OutputMeta | None, list[Any]]:
    """Header and ``keep(record)`` of every record of a JSONL output, streamed line by line.

    Returns ``(None, [])`` when the file is empty (or held only a torn first line, now cut off).
    """
    repair_tail(path, repair=repair)
    meta, start = jsonl_header(path, sidecar)
    if meta is None:
        return None, []
    return meta, [keep(rec) for _, rec in jsonl_records(path, start)]


def csv_rows(path: Path, columns: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line number, {column: cell})`` of every row of a CSV output, after its column names.

    Raises:
        OutputError: the column names are not ``columns`` (a column missing, or another
            layout's), a row of another width, or text that is not CSV.
    """
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, strict=True)
        try:
            header = next(reader, None)
            if header is None:
                return
            if header != list(columns):
                raise OutputMismatchError(_column_difference(path, header, columns))
            for row in reader:
                if len(row) != len(columns):
                    raise OutputError(
                        f"{path}:{reader.line_num}: row has {len(row)} cells, expected {len(columns)}; "
                        "the file was edited or is corrupt"
                    )
                yield reader.line_num, dict(zip(columns, row))
        except (csv.Error, UnicodeDecodeError) as err:
            raise OutputError(
                f"{path}:{reader.line_num}: unreadable CSV ({err}); the file was edited or is corrupt"
            ) from None


def _column_difference(path: Path, header: list[str], columns: Sequence[str]) -> str:
    missing = [c for c in columns if c not in header]
    extra = [c for c in header if c not in columns]
    what = (f"column(s) {', '.join(missing)} missing" if missing else f"column(s) {', '.join(extra)} extra" if extra
            else "columns in another order")
    return f"{path}:1: {what} (its header {meta_path(path).name} lists {', '.join(columns)}); the file was edited"


def scan_csv(
    path: Path, columns: Sequence[str], *, repair: bool, keep: Callable[[dict[str, str]], Any] = lambda r: r
) -> list[Any]:
    """``keep(row)`` of every row of a CSV output, streamed; a torn last row is cut off first."""
    repair_tail(path, repair=repair)
    return [keep(row) for _, row in csv_rows(path, columns)]


def sidecar_meta(path: Path, *, fix: str = RESUME_FIX) -> OutputMeta:
    """The header of a JSONL or CSV output, from ``FILE.meta.json``; ``fix`` ends the error."""
    mp = meta_path(path)
    if not mp.exists():
        raise OutputError(
            f"{path}: no {mp.name} next to it, so it is not an attrtag tag output (or its header file "
            f"was lost); {fix}"
        )
    return OutputMeta.from_dict(read_json(mp), source=str(mp))


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise OutputError(
            f"{path}: cannot read it ({err}); delete the output and its sidecars to start again"
        ) from None


def import_pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401  (makes pyarrow.parquet an attribute)
    except ImportError:
        raise OutputError(
            "Parquet output needs pyarrow: pip install 'attrtag[parquet]' (or write .jsonl/.csv)"
        ) from None
    return pyarrow


def parquet_meta(path: Path, *, fix: str = RESUME_FIX) -> OutputMeta:
    """The header of a Parquet output, from its ``attrtag`` metadata; ``fix`` ends the error."""
    pa = import_pyarrow()
    try:
        raw = (pa.parquet.read_schema(path).metadata or {}).get(b"attrtag")
    except (OSError, pa.ArrowException) as err:
        raise OutputError(f"{path}: cannot read it as Parquet ({err}); {fix}") from None
    if raw is None:
        raise OutputError(
            f"{path}: not an attrtag tag output (no 'attrtag' metadata); {fix}"
        )
    try:
        found = json.loads(raw)
    except ValueError as err:
        raise OutputError(f"{path}: unreadable attrtag metadata ({err}); the file was edited or is corrupt") from None
    return OutputMeta.from_dict(found, source=str(path))


def parquet_rows(path: Path, *, batch_size: int) -> Iterable[tuple[int, list[dict[str, Any]]]]:
    """``(number of the first row, rows)`` of a Parquet output, ``batch_size`` rows at a time."""
    pa = import_pyarrow()
    n = 1
    try:
        for batch in pa.parquet.ParquetFile(path).iter_batches(batch_size=batch_size):
            rows = batch.to_pylist()
            yield n, rows
            n += len(rows)
    except (OSError, pa.ArrowException) as err:
        raise OutputError(f"{path}, record {n}: cannot read it as Parquet ({err}); the file is corrupt") from None
