"""Reading a tag output in chunks, so that memory stays bounded whatever the file's size.

:func:`iter_output` gives what :func:`.files.read_output` gives, ``chunk`` records at a time
(``attrtag classify`` streams its input this way). The whole file is checked before the first
chunk: a torn or edited file fails at once, not half-way through a job.
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
