"""A finished tag output, read once, with the image file behind every record.

Records name images by their display path (``datasets/OUTPUT.md``): the input path as given to
``attrtag tag``, so a relative one is relative to the folder the tagging ran in. Every review
format needs the file itself (to show it, or to point a tool at it), hence ``root``.
"""
from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from ..errors import OutputError
from ..schema import Schema
from ..tagging.stream import read_output
from ..tagging.header import OutputMeta
from ..tagging.records import TagRecord
from .sureness import least_sure


@dataclass(frozen=True)
class TagSet:
    """The header and records of one tag output, and where its relative paths start.

    Attributes:
        source: the tag output file.
        meta: its header (schema, model, thresholds, class rules).
        records: every record, in file order.
        root: the folder relative record paths are relative to.
    """

    source: Path
    meta: OutputMeta
    records: list[TagRecord]
    root: Path

    @property
    def schema(self) -> Schema:
        return self.meta.layout.schema

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """The classes of the rules the tags were scored with; None without class fields."""
        classes = self.meta.layout.classes
        return None if classes is None else classes.rules.names

    @property
    def tagged(self) -> list[TagRecord]:
        """The records of images that were tagged (failed images left out)."""
        return [r for r in self.records if "error" not in r]

    def image_path(self, record: TagRecord) -> Path:
        """The image file of ``record``: its path, under :attr:`root` when relative."""
        return self.root / record["path"]  # an absolute path replaces the root

    def least_sure(self, record: TagRecord) -> tuple[str, float]:
        """The group the model is least sure of in a tagged record, and how sure (:mod:`.sureness`):
        an exclusive group's top probability, a multi-label group's least sure value."""
        return least_sure(self.meta.layout, record)

    def describe(self) -> str:
        """One line for summaries: the file, how many records, the model."""
        failed = len(self.records) - len(self.tagged)
        return f"{self.source}: {len(self.records)} records ({failed} failed), model {self.meta.model}"


def relative_url(path: str | os.PathLike[str], base: str | os.PathLike[str]) -> str:
    """``path`` relative to the folder ``base``, as a URL-quoted POSIX path (``../img/a%20b.jpg``)."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(base))
    return urllib.parse.quote(Path(rel).as_posix(), safe="/")


def load_tags(path: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None) -> TagSet:
    """Read a tag output (JSONL, CSV or Parquet) for review.

    Args:
        path: the output of ``attrtag tag`` (with its ``.meta.json`` for JSONL/CSV).
        root: the folder relative record paths are relative to (default: the one the file's
            header records, where ``attrtag tag`` ran, when it is a folder here; else the
            current folder).

    Returns:
        The tag set.

    Raises:
        OutputError: the file is not a tag output; one line naming it (and the line).
    """
    if root is not None and not Path(root).is_dir():  # else every thumbnail is "missing", silently
        raise OutputError(f"`root={root}` is not a folder: it is what relative image paths are relative to")
    meta, records = read_output(path)
    if root is None:
        recorded = Path(meta.relative_to) if meta.relative_to else None
        root = recorded if recorded is not None and recorded.is_dir() else Path.cwd()
    return TagSet(Path(path), meta, records, Path(root))
