"""Reading a tag output back: whole (:func:`read_output`) or in chunks (:func:`iter_output`).

:func:`iter_output` gives what :func:`read_output` gives, ``chunk`` records at a time, so that
memory stays bounded whatever the file's size (``attrtag classify`` streams its input this
way). The whole file is checked before the first chunk: a torn or edited file fails at once,
not half-way through a job. The scanners are the writers' own (:mod:`.files`), which check an
output before resuming it.
"""
from __future__ import annotations

import csv
import itertools
import json
import os
from pathlib import Path
from typing import Any, Iterator

from ..errors import OutputError
from .files import _import_pyarrow, _parquet_meta, _scan_csv, _scan_jsonl, _sidecar_meta
from .header import HEADER_KEY, OutputMeta, output_format
from .records import TagRecord


def read_output(path: str | os.PathLike[str], *, fmt: str | None = None) -> tuple[OutputMeta, list[TagRecord]]:
    """Read any tag output back as ``(header, records)``.

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
    if not path.is_file():
        raise OutputError(f"{path}: tag output not found")
    if kind == "jsonl":
        meta, records = _scan_jsonl(path, True, repair=False)
        return meta or _sidecar_meta(path), records  # no record yet: the header alone
    if kind == "csv":
        meta = _sidecar_meta(path)
        return meta, _scan_csv(path, meta.layout.columns, repair=False, keep=meta.layout.from_flat)
    meta = _parquet_meta(path)
    rows = _import_pyarrow().parquet.read_table(path).to_pylist()
    return meta, [meta.layout.from_flat(r) for r in rows]


def iter_output(
    path: str | os.PathLike[str], *, fmt: str | None = None, chunk: int = 4096
) -> tuple[OutputMeta, Iterator[list[TagRecord]]]:
    """The header of a tag output and its records, ``chunk`` at a time, in file order.

    JSONL and CSV are read twice: the scanner of :mod:`.files` checks every line first, keeping
    nothing; then records are parsed chunk by chunk (an old file's header line skipped).

    Raises:
        OutputError: not an attrtag output, or one whose last record is incomplete.
    """
    path = Path(path)
    kind = output_format(path, fmt)
    if not path.is_file():
        raise OutputError(f"{path}: tag output not found")
    if kind == "parquet":
        meta = _parquet_meta(path)
        batches = _import_pyarrow().parquet.ParquetFile(path).iter_batches(batch_size=chunk)
        return meta, ([meta.layout.from_flat(r) for r in b.to_pylist()] for b in batches)
    if kind == "jsonl":
        found, _ = _scan_jsonl(path, True, repair=False, keep=lambda r: None)
        meta = found or _sidecar_meta(path)  # no record yet: the header alone
        records: Iterator[TagRecord] = (r for n, r in _numbered_json(path) if not (n == 1 and HEADER_KEY in r))
        return meta, _chunks(records, chunk)
    meta = _sidecar_meta(path)
    _scan_csv(path, meta.layout.columns, repair=False, keep=lambda r: None)
    return meta, _chunks(_csv_records(path, meta), chunk)


def _numbered_json(path: Path) -> Iterator[tuple[int, Any]]:
    with open(path, "rb") as f:
        yield from ((n, json.loads(line)) for n, line in enumerate(f, start=1))


def _csv_records(path: Path, meta: OutputMeta) -> Iterator[TagRecord]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = csv.reader(f, strict=True)
        next(rows, None)  # the column names, checked by _scan_csv
        yield from (meta.layout.from_flat(dict(zip(meta.layout.columns, row))) for row in rows)


def _chunks(records: Iterator[TagRecord], size: int) -> Iterator[list[TagRecord]]:
    return iter(lambda: list(itertools.islice(records, size)), [])
