"""Retrying failed images: an output rewritten without their error records, so a resume redoes them.

What ``attrtag tag --retry-failed`` does before resuming (``datasets/OUTPUT.md``, "Retrying
failed images"). Kept apart from :mod:`.files` (the writers) because it only ever rewrites
whole files, atomically.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Callable, Collection, Sequence

from .._files import atomic_path
from .files import _ParquetWriter
from .header import output_format
from .scan import import_pyarrow, partial_path

def drop_failed(
    path: str | os.PathLike[str], paths: Collection[str], *, columns: Sequence[str], fmt: str | None = None
) -> int:
    """Remove the error records of ``paths`` from an output, so that a resume tags them again.

    Every file holding records (the output, and a Parquet run's JSONL sidecar) is rewritten
    without them into a temporary file that replaces it atomically; every other line, header
    included, is kept byte for byte. A crash leaves each file either as it was or rewritten,
    so nothing tagged is ever lost; the retried images are then appended, after the others.

    Args:
        path: an output that :func:`open_output` has accepted for this run (header checked,
            torn tail repaired).
        paths: display paths of this run's inputs; error records of other paths are kept.
        columns: the output's flat columns (``RecordLayout.columns``), to read CSV rows.
        fmt: format override (default: from the extension).

    Returns:
        How many records were removed.
    """
    path = Path(path)
    wanted = set(paths)
    kind = output_format(path, fmt)
    if kind == "jsonl":
        return _drop_failed_lines(path, lambda line: _failed_json_path(line) in wanted)
    if kind == "csv":
        return _drop_failed_lines(path, lambda line: _failed_csv_path(line, columns) in wanted)
    dropped = 0
    if path.exists():
        dropped += _drop_failed_parquet(path, wanted)
    partial = partial_path(path)
    if partial.exists():
        dropped += _drop_failed_lines(partial, lambda line: _failed_json_path(line) in wanted)
    return dropped


def _drop_failed_lines(path: Path, failed: Callable[[bytes], bool]) -> int:
    """Rewrite a line-based output without the lines ``failed`` picks (none picked: untouched)."""
    with open(path, "rb") as f:
        if not any(failed(line) for line in f):
            return 0
    dropped = 0
    with atomic_path(path) as tmp, open(path, "rb") as src, open(tmp, "wb") as out:
        for line in src:
            if failed(line):
                dropped += 1
            else:
                out.write(line)
    return dropped


def _failed_json_path(line: bytes) -> str | None:
    if b'"error"' not in line:  # cheap pre-filter: tagged records and the header never have it
        return None
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return rec.get("path") if isinstance(rec, dict) and rec.get("error") is not None else None


def _failed_csv_path(line: bytes, columns: Sequence[str]) -> str | None:
    try:
        row = next(csv.reader([line.decode("utf-8")]))
    except (csv.Error, UnicodeDecodeError, StopIteration):
        return None
    if len(row) != len(columns) or row == list(columns):
        return None
    cells = dict(zip(columns, row))
    return cells["path"] if cells.get("error") else None


def _drop_failed_parquet(path: Path, wanted: set[str]) -> int:
    pa = import_pyarrow()
    import pyarrow.compute as pc

    file = pa.parquet.ParquetFile(path)
    dropped = 0
    for batch in file.iter_batches(columns=["path", "error"], batch_size=_ParquetWriter.CHUNK):
        failed = pc.and_(pc.is_valid(batch.column("error")), pc.is_in(batch.column("path"), pa.array(list(wanted))))
        dropped += pc.sum(failed).as_py() or 0
    if not dropped:
        return 0
    with atomic_path(path) as tmp:
        with pa.parquet.ParquetWriter(tmp, file.schema_arrow) as out:
            for batch in file.iter_batches(batch_size=_ParquetWriter.CHUNK):
                table = pa.Table.from_batches([batch])
                failed = pc.and_(pc.is_valid(table.column("error")), pc.is_in(table.column("path"), pa.array(list(wanted))))
                out.write_table(table.filter(pc.invert(failed)))
    return dropped
