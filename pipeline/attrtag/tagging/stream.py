"""Reading a tag output back: whole (:func:`read_output`) or in chunks (:func:`iter_output`).

:func:`iter_output` gives what :func:`read_output` gives, ``chunk`` records at a time, so that
memory stays bounded whatever the file's size (``attrtag classify`` streams its input this
way). The whole file is checked before the first chunk: a torn or edited file fails at once,
not half-way through a job.

What every reader of a tag file (``classify``, ``report``, ``convert``) can count on:

* every record is one its header's layout could have written (:mod:`.check`);
  anything else is one :class:`OutputError` naming ``FILE:LINE`` (``FILE, record N`` in
  Parquet) and the field;
* one record per input: two runs that wrote one output at once (before outputs were locked,
  :mod:`.lock`) recorded images twice; the last record of each is kept, where it stands, and
  a warning says how many were dropped;
* the format is the content's (JSONL, CSV or Parquet, told apart by their first bytes), so a
  file whose name says nothing, or says another format, is still read.
"""
from __future__ import annotations

import hashlib
import itertools
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from ..errors import OutputError
from .check import RecordCheck
from .header import FORMATS, OutputMeta, extension_format
from .records import TagRecord
from .scan import (
    READ_FIX, csv_rows, jsonl_header, jsonl_records, parquet_meta, parquet_rows, repair_tail, sidecar_meta,
)

_logger = logging.getLogger(__name__)
#: Parquet rows read at a time.
_BATCH = 4096


def read_output(path: str | os.PathLike[str], *, fmt: str | None = None) -> tuple[OutputMeta, list[TagRecord]]:
    """Read any tag output back as ``(header, records)``.

    Args:
        path: a finished output file (a Parquet run still in progress lives in its sidecar).
        fmt: format override (default: from the content, else the extension).

    Returns:
        The header and one record per input, in file order.

    Raises:
        OutputError: not an attrtag output, a malformed record, or a JSONL/CSV whose last
            record is incomplete.
    """
    path = Path(path)
    kind = reader_format(path, fmt)
    meta = _header(path, kind)
    records = [rec for _, rec in _records(path, kind, meta, check=True)]
    last = {r["path"]: i for i, r in enumerate(records)}
    if len(last) == len(records):
        return meta, records
    _say_duplicates(path, len(records) - len(last))
    return meta, [r for i, r in enumerate(records) if last[r["path"]] == i]


def iter_output(
    path: str | os.PathLike[str], *, fmt: str | None = None, chunk: int = 4096
) -> tuple[OutputMeta, Iterator[list[TagRecord]]]:
    """The header of a tag output and its records, ``chunk`` at a time, in file order.

    The file is read twice: every record is checked first, keeping only a digest of its path
    (16 bytes, to find duplicates); then records are parsed chunk by chunk.

    Raises:
        OutputError: as :func:`read_output`, before the first chunk.
    """
    path = Path(path)
    kind = reader_format(path, fmt)
    meta = _header(path, kind)
    keep = _last_of_each(path, (rec["path"] for _, rec in _records(path, kind, meta, check=True)))
    # Only the records checked: a run appending meanwhile adds lines this read never saw.
    records = itertools.islice(_records(path, kind, meta, check=False), len(keep))
    kept = (rec for (_, rec), k in zip(records, keep) if k)
    return meta, iter(lambda: list(itertools.islice(kept, chunk)), [])


def reader_format(path: Path, fmt: str | None = None) -> str:
    """``fmt``, else the format the first bytes show, else the extension's.

    Raises:
        OutputError: the file is missing, or neither its content nor its name says a format.
    """
    if not path.is_file():
        raise OutputError(f"{path}: tag output not found")
    if fmt is not None:
        if fmt not in FORMATS:
            raise OutputError(f"`fmt={fmt}`: not one of {', '.join(FORMATS)}")
        return fmt
    named, found = extension_format(path), _sniff(path)
    if found is not None and named is not None and found != named:
        _logger.warning("%s holds %s, not the %s its name says; reading it as %s", path, found.upper(),
                        named.upper(), found.upper())
    kind = found or named
    if kind is None:
        raise OutputError(f"{path}: neither JSONL, CSV nor Parquet (by its first bytes or its name); "
                          "not an attrtag tag output")
    return kind


def _sniff(path: Path) -> str | None:
    """``parquet`` (magic ``PAR1``), ``jsonl`` (a ``{`` first), ``csv`` (a ``path`` column first), or None."""
    with open(path, "rb") as f:
        head = f.read(1 << 12)
    if head.startswith(b"PAR1"):
        return "parquet"
    first = head.lstrip().split(b"\n", 1)[0].rstrip(b"\r")
    if first.startswith(b"{"):
        return "jsonl"
    if first == b"path" or first.startswith((b"path,", b'"path",')):
        return "csv"
    return None


def _header(path: Path, kind: str) -> OutputMeta:
    if kind == "parquet":
        return parquet_meta(path, fix=READ_FIX)
    repair_tail(path, repair=False)  # a torn last line: refused, never read as a record
    if kind == "jsonl":  # no record yet: the header alone
        return jsonl_header(path, True, fix=READ_FIX)[0] or sidecar_meta(path, fix=READ_FIX)
    return sidecar_meta(path, fix=READ_FIX)


def _records(path: Path, kind: str, meta: OutputMeta, *, check: bool) -> Iterator[tuple[str, TagRecord]]:
    """``(where, record)`` of every record in file order (``where``: ``FILE:LINE`` or ``FILE, record N``)."""
    if kind == "jsonl":
        start = jsonl_header(path, True)[1]
        numbered: Iterable[tuple[str, Any]] = ((f"{path}:{n}", rec) for n, rec in jsonl_records(path, start))
    elif kind == "csv":
        numbered = ((f"{path}:{n}", row) for n, row in csv_rows(path, meta.layout.columns))
    else:
        numbered = ((f"{path}, record {n + i}", row) for n, rows in parquet_rows(path, batch_size=_BATCH)
                    for i, row in enumerate(rows))
    checked = RecordCheck(meta.layout) if check else None
    for where, raw in numbered:
        try:
            rec = raw if kind == "jsonl" else meta.layout.from_flat(raw)
            if checked is not None:
                checked(rec)
        except OutputError as err:
            raise OutputError(f"{where}: {err.text}; the file was edited or is corrupt") from None
        yield where, rec


def _last_of_each(path: Path, paths: Iterable[str]) -> np.ndarray:
    """Per record, whether it is the last one of its path (its digest: 16 bytes a record)."""
    digests = bytearray()
    for p in paths:
        digests += hashlib.blake2b(p.encode("utf-8", "surrogateescape"), digest_size=16).digest()
    keys = np.frombuffer(bytes(digests), dtype="V16")
    keep = np.ones(len(keys), dtype=bool)
    if len(keys) > 1:
        order = np.argsort(keys, kind="stable")  # equal digests stay in file order: the last one is kept
        ordered = keys[order]
        keep[order[:-1][ordered[1:] == ordered[:-1]]] = False
    dropped = len(keep) - int(keep.sum())
    if dropped:
        _say_duplicates(path, dropped)
    return keep


def _say_duplicates(path: Path, dropped: int) -> None:
    _logger.warning("%s: %d record(s) repeat an image recorded again later (two runs wrote the file at once); "
                    "reading the last record of each", path, dropped)
