"""The header of a tag output (what made it) and the resume check.

Where the header is stored for each format, and what a resume compares, is specified in
``datasets/OUTPUT.md``.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from ..errors import OutputError, OutputMismatchError, SchemaError
from ..schema import Schema
from ..zeroshot.scoring import ClassScoring
from .records import RecordLayout


FORMATS = ("jsonl", "csv", "parquet")
HEADER_KEY = "_attrtag"
#: 2: class fields; 3: multi-label groups (older attrtag then says "upgrade" instead of "delete the
#: file"). A file is written with the lowest version that holds it: 1 without either.
FORMAT_VERSION = 3
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


@dataclass(frozen=True)
class OutputMeta:
    """What made an output file; stored with it and compared on resume.

    Attributes:
        layout: schema, top_k and thresholds.
        model: the model file's name, for messages.
        model_sha256: hex SHA-256 of the model file: the model's identity.
        relative_to: the folder the records' relative paths are relative to (the working folder
            of the run that began the file), so that a resume from elsewhere, or with another
            spelling of the same images, finds them (None: a file from before it was stored).
            Not compared on resume.
    """

    layout: RecordLayout
    model: str
    model_sha256: str
    relative_to: str | None = None

    # What travels with the records, as a model card carries it (:func:`attrtag.zeroshot.scoring.class_scoring`).
    @property
    def schema(self) -> Schema:
        return self.layout.schema

    @property
    def rules(self) -> Any:
        """The class rules the records were scored with, or None."""
        return None if self.layout.classes is None else self.layout.classes.rules

    @property
    def label_counts(self) -> Mapping[str, tuple[int, ...]] | None:
        return None if self.layout.classes is None else self.layout.classes.label_counts

    @property
    def label_totals(self) -> Mapping[str, tuple[int, ...]] | None:
        """Per multi-label group, the training images each value is known in (its prior's divisor), or None."""
        return None if self.layout.classes is None else self.layout.classes.label_totals

    @property
    def calibration(self) -> Any:
        return None if self.layout.classes is None else self.layout.classes.calibration

    def to_dict(self) -> dict[str, Any]:
        """The JSON header (``{"format_version", "model", ...}``)."""
        classes = self.layout.classes
        return {
            # Files without class fields keep version 1: older attrtag versions read them.
            "format_version": 3 if self.layout.schema.multi else 2 if classes is not None else 1,
            "model": self.model,
            "model_sha256": self.model_sha256,
            "schema": self.layout.schema.to_dict(),
            "top_k": self.layout.top_k,
            "thresholds": {g: t for g, t in self.layout.threshold_items()},
            "classes": classes.to_dict() if classes is not None else None,
            **({"value_thresholds": self.layout.value_threshold_items()} if self.layout.schema.multi else {}),
            # Only when applied: a header without them reads as before (raw probabilities).
            **({"temperatures": dict(self.layout.temperatures)} if self.layout.temperatures else {}),
            **({"paths_relative_to": self.relative_to} if self.relative_to is not None else {}),
        }

    def resumed_from(self, found: "OutputMeta") -> "OutputMeta":
        """This run's header for a file it resumes: the file's own :attr:`relative_to` kept."""
        return replace(self, relative_to=found.relative_to)

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
            values = d.get("value_thresholds") or {}
            layout = RecordLayout(
                schema,
                top_k=d.get("top_k"),
                thresholds={str(g): float(t) for g, t in (d.get("thresholds") or {}).items()},
                classes=ClassScoring.from_dict(classes, schema, source=source) if classes is not None else None,
                value_thresholds={g: tuple(float(values[g][v]) for v in schema[g].values) for g in values},
                temperatures={str(g): float(t) for g, t in (d.get("temperatures") or {}).items()},
            )
            base = d.get("paths_relative_to")
            return cls(layout, str(d["model"]), str(d["model_sha256"]), None if base is None else str(base))
        except (KeyError, TypeError, ValueError, SchemaError) as err:
            if isinstance(err, OutputError):
                raise
            raise OutputError(
                f"{source}: unreadable attrtag header ({err}); delete the file or use another `out`"
            ) from None

    def check_resumable(self, found: "OutputMeta", *, source: str) -> None:
        """Raise :class:`OutputMismatchError` unless ``found`` (the file's header) matches this run.

        Args:
            found: the header read from the existing output.
            source: the output file, for the message.
        """
        fix = "use another `out`, or `overwrite=True` to start it again"
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
            ("`top_k`", found.layout.top_k, self.layout.top_k),
            ("`thresholds`", dict(found.layout.thresholds), dict(self.layout.thresholds)),
            ("value `thresholds`", found.layout.value_threshold_items(), self.layout.value_threshold_items()),
            ("temperatures", dict(found.layout.temperatures), dict(self.layout.temperatures)),
        ):
            if old != new:
                raise OutputMismatchError(
                    f"{source} was written with {what} {_shown(old)}, this run uses {_shown(new)}; {fix}")
        old_c, new_c = found.layout.classes, self.layout.classes
        if old_c != new_c:
            raise OutputMismatchError(
                f"{source} was written with {_describe_classes(old_c)}, this run uses {_describe_classes(new_c)}; {fix}"
            )


def _shown(value: Any) -> str:
    """A header setting in a message: an unset one (``top_k`` None, no thresholds) says so."""
    return "unset" if value is None or (not isinstance(value, str) and value in ({}, (), [])) else str(value)


def _describe_classes(classes: ClassScoring | None) -> str:
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
    """The output format: ``fmt`` when given, else from the extension.

    Args:
        path: the output file.
        fmt: ``jsonl``, ``csv`` or ``parquet``, or None to use the extension.

    Returns:
        One of :data:`FORMATS`.

    Raises:
        OutputError: an unknown ``fmt``, a ``fmt`` that contradicts the extension (CSV in
            ``tags.jsonl`` is a file no JSONL reader reads), or (without ``fmt``) an extension
            that names no format: ``tags.xlsx`` must not silently hold JSONL.
    """
    ext = Path(path).suffix.lower()
    if fmt is not None:
        if fmt not in FORMATS:
            raise OutputError(f"`fmt={fmt}`: not one of {', '.join(FORMATS)}")
        if _EXTENSIONS.get(ext, fmt) != fmt:
            raise OutputError(f"`fmt={fmt}` contradicts `out={path}`, a {_EXTENSIONS[ext].upper()} name; drop `fmt`, or name "
                              f"the file {'/'.join(e for e, f in _EXTENSIONS.items() if f == fmt)}")
        return fmt
    if ext not in _EXTENSIONS:
        why = f"extension {ext!r} names no output format" if ext else "no extension to name its format"
        raise OutputError(
            f"`out={path}`: {why}; "
            f"use {', '.join(_EXTENSIONS)} (or `fmt` jsonl/csv/parquet to choose one for this name)"
        )
    return _EXTENSIONS[ext]


def extension_format(path: str | os.PathLike[str]) -> str | None:
    """The format ``path``'s extension names (``.jsonl``, ``.ndjson``, ``.csv``, ``.parquet``, ``.pq``),
    or None."""
    return _EXTENSIONS.get(Path(path).suffix.lower())
