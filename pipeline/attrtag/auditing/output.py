"""The audit file (``datasets/AUDIT.md``): one row per suspect label, CSV or JSONL, and its summary.

``FILE`` holds the rows, most suspect first; ``FILE.audit.json`` beside it says how they were
made (method, folds, training options, the schema) and holds the summary per group. The summary
is written first and the rows last, each atomically, so a rows file never stands without its
summary. :func:`read_audit` reads both back (the review commands take an audit file).
"""
from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from .._files import write_text
from ..errors import AttrtagError
from ..schema import Schema
from .labels import AuditLabel, GroupSummary

FORMATS = {".csv": "csv", ".jsonl": "jsonl"}
COLUMNS = ("path", "group", "value", "label", "suggested", "score", "p_label", "p_suggested", "flagged", "rank", "line",
           "split")
SIDECAR = ".audit.json"
#: The summary's format version: a reader refuses a newer one instead of misreading it.
VERSION = 1
DIGITS = 6


def sidecar(path: str | os.PathLike) -> Path:
    """Where the summary of the audit file ``path`` lives: ``path`` + ``.audit.json``."""
    return Path(os.fspath(path) + SIDECAR)


def audit_format(path: str | os.PathLike) -> str:
    """``csv`` or ``jsonl``, from the file's extension."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise AttrtagError(f"`out={path}`: name the file .csv or .jsonl (the format follows the extension)")
    return fmt


def row_dict(x: AuditLabel) -> dict[str, Any]:
    """One row, in :data:`COLUMNS` order (probabilities rounded once, here)."""
    return {"path": x.path, "group": x.group, "value": x.value, "label": x.label, "suggested": x.suggested,
            "score": round(x.score, DIGITS), "p_label": round(x.p_label, DIGITS),
            "p_suggested": round(x.p_suggested, DIGITS), "flagged": x.flagged, "rank": x.rank, "line": x.line,
            "split": x.split}


def format_rows(rows: Iterable[AuditLabel], fmt: str) -> str:
    """The file's text: CSV with a header (empty cell for no value), or one JSON object a line."""
    dicts = [row_dict(x) for x in rows]
    if fmt == "jsonl":
        return "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in dicts)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows({k: ("" if v is None else str(v).lower() if isinstance(v, bool) else v) for k, v in d.items()}
                for d in dicts)
    return buf.getvalue()


def summary_dict(summary: Iterable[GroupSummary]) -> list[dict[str, Any]]:
    return [{"group": s.group, "kind": s.kind, "checked": s.checked, "flagged": s.flagged,
             "estimated_errors": round(s.estimated_errors, 2),
             "estimated_error_rate": round(s.estimated_error_rate, 4)} for s in summary]


def write_audit(path: str | os.PathLike, rows: list[AuditLabel], meta: Mapping[str, Any]) -> Path:
    """Write the summary ``meta`` (with ``rows`` named ``suspects`` or ``all``), then the rows."""
    path = Path(path)
    fmt = audit_format(path)
    head = {"attrtag_audit": VERSION, "created": time.strftime("%Y-%m-%d %H:%M:%S"), "format": fmt,
            "count": len(rows), **meta}
    write_text(sidecar(path), json.dumps(head, indent=1, ensure_ascii=False) + "\n")
    write_text(path, format_rows(rows, fmt))
    return path


@dataclass
class AuditFile:
    """An audit file read back: its summary and rows (dicts with :data:`COLUMNS`)."""

    path: Path
    meta: dict[str, Any]
    rows: list[dict[str, Any]]

    @property
    def schema(self) -> Schema:
        return Schema.from_dict(self.meta["schema"])


def is_audit(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an audit file (its summary lies beside it)."""
    return Path(path).is_file() and sidecar(path).is_file()


def read_audit(path: str | os.PathLike) -> AuditFile:
    """Read an audit file and its summary; a missing or newer summary, or a bad row, is one error line."""
    path = Path(path)
    if not path.is_file():
        raise AttrtagError(f"{path}: audit file not found")
    try:
        meta = json.loads(sidecar(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AttrtagError(f"{path}: no {sidecar(path).name} beside it; copy or move the two files together") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AttrtagError(f"{sidecar(path)}: not an audit summary ({err})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("attrtag_audit"), int) or "schema" not in meta:
        raise AttrtagError(f"{sidecar(path)}: not an audit summary (no attrtag_audit version or schema)")
    if meta["attrtag_audit"] > VERSION:
        raise AttrtagError(f"{path}: written by a newer attrtag (audit format {meta['attrtag_audit']}); upgrade attrtag")
    text = path.read_text(encoding="utf-8")
    rows = _jsonl(path, text) if audit_format(path) == "jsonl" else _csv(path, text)
    return AuditFile(path=path, meta=meta, rows=rows)


def _jsonl(path: Path, text: str) -> list[dict[str, Any]]:
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise AttrtagError(f"{path}:{n}: not a JSON object ({err.msg})") from None
        rows.append(_checked(path, n, row))
    return rows


def _csv(path: Path, text: str) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    rows = []
    for row in reader:
        row = {k: (v if v != "" else None) for k, v in row.items()}
        for k in ("score", "p_label", "p_suggested"):
            row[k] = _number(path, reader.line_num, k, row.get(k), float)
        for k in ("rank", "line"):
            row[k] = _number(path, reader.line_num, k, row.get(k), int)
        row["flagged"] = row.get("flagged") == "true"
        rows.append(_checked(path, reader.line_num, row))
    return rows


def _number(path: Path, line: int, key: str, value: Any, kind: type) -> Any:
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise AttrtagError(f"{path}:{line}: {key} {value!r} is not a number") from None


def _checked(path: Path, line: int, row: Any) -> dict[str, Any]:
    if not isinstance(row, dict) or any(k not in row for k in ("path", "group", "label", "suggested", "score")):
        raise AttrtagError(f"{path}:{line}: not an audit row (needs path, group, label, suggested, score)")
    return row
