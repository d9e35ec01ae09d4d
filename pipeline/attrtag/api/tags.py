"""Working with tag files from Python: re-score classes, review, hand on, bring corrections back.

::

    summary = attrtag.classify("tags.jsonl", "classes.jsonl", rules="other_rules.yaml")
    attrtag.report("tags.jsonl", "report.html")
    attrtag.to_labelstudio("tags.jsonl", "ls_project/")
    attrtag.from_labelstudio("export.json", "schema.yaml", "corrections.csv")
    attrtag.suggest_rules("manifest.csv", "articleType", "rules.yaml", schema="schema.yaml")

What ``attrtag classify``, ``report``, ``convert`` and ``rules suggest`` run; no model runs and
no torch is needed. Every file is written atomically.
"""
from __future__ import annotations

import csv
import os
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from .._files import check_output, fsync_dir, write_text
from ..data.manifest import read_manifest
from ..errors import AttrtagError, ManifestError, OutputError
from ..schema import Schema
from ..tagging.files import open_output
from .._lock import OutputLock
from ..tagging.scan import meta_path, partial_path
from ..tagging.header import OutputMeta, output_format
from ..tagging.records import RecordLayout
from ..tagging.stream import iter_output
from ..zeroshot.rules import RulesSource
from ..zeroshot.scoring import ClassScoring, class_scoring, said_once
from ..tagging.thresholds import Thresholds, split_thresholds
from ._tag_carrier import tag_carrier

if TYPE_CHECKING:
    from ..review.corrections import Correction
    from ..review.report import ReportSummary
    from ..zeroshot.suggest import DraftRules

Warn = Callable[[str], Any]
#: Records scored per call (bounds the ``(N, classes, groups)`` arrays of the scorer).
CHUNK = 4096


@dataclass(frozen=True)
class ClassifySummary:
    """What :func:`classify` wrote: the scoring used and the classes named, most frequent first;
    ``origin`` says where priors and calibration came from when not from the tags' header."""

    out: Path
    classes: ClassScoring
    named: Mapping[str, int]
    failed: int
    origin: str = ""


def classify(
    tags: str | os.PathLike,
    out: str | os.PathLike,
    *,
    rules: RulesSource | None = None,
    class_top_k: int | None = None,
    unknown_threshold: float | None = None,
    overrides: Mapping[str, str] | None = None,
    priors: bool = True,
    calibration: bool = True,
    gamma: float | None = None,
    seen: Sequence[str] | None = None,
    model_file: str | os.PathLike | None = None,
    fmt: str | None = None,
    overwrite: bool = False,
    warn: Warn | None = None,
) -> ClassifySummary:
    """Re-score a finished tag output with class rules and write it again; no model runs.

    Rules, class options, priors and calibration default to the header's (``overrides`` do
    not); a header without priors (tagged without rules) takes them from the model that tagged
    it (:mod:`._tag_carrier`), so the classes are those ``tag`` names. Memory is bounded.

    Args:
        tags: an output of ``attrtag tag`` that holds full distributions (no ``top_k``).
        out: the file to write (``.jsonl``, ``.csv``, ``.parquet``).
        rules, class_top_k, unknown_threshold, overrides, priors, calibration: as
            :func:`attrtag.load`'s.
        gamma: calibrated stacking with this constant instead of the stored calibration.
        seen: the classes ``gamma`` lowers (default: the stored calibration's).
        model_file: the model that tagged ``tags``, whose card gives the label priors and
            calibration (checked by SHA-256 against the header).
        fmt: output format (default: from ``out``'s extension; given, it must not contradict it).
        overwrite: replace ``out`` when it exists.
        warn: called with each warning, once (default: ignored).
    """
    tags, out, warn = Path(tags), Path(out), said_once(warn)
    found, chunks = _rescorable(tags, out, overwrite=overwrite, rules_given=rules is not None)
    fmt = _format(out, fmt)
    old, inherit = found.layout, found.layout.classes
    carrier = tag_carrier(found, tags, model=model_file, wanted=priors or calibration)
    classes = class_scoring(
        carrier, rules, priors=priors, calibration=calibration, gamma=gamma, seen=seen, overrides=overrides,
        top_k=class_top_k if class_top_k is not None or inherit is None else inherit.top_k,
        unknown_threshold=unknown_threshold if unknown_threshold is not None or inherit is None
        else inherit.unknown_threshold,
        name=carrier.name, rules_source=(inherit.source if inherit else "") or f"{tags} header", warn=warn,
    )
    assert classes is not None  # rules given, or the header's
    # Only the class scoring is new: the records keep the thresholds (multi-label values' included)
    # and temperatures they were decided with, and the header must go on saying so.
    layout = replace(old, classes=classes)
    if carrier.warning:  # said once the run is known to go on: a bad rule is then the only line
        warn(carrier.warning)
    named = _write_rescored(out, OutputMeta(layout, found.model, found.model_sha256, found.relative_to), chunks, old, fmt=fmt)
    failed = named.pop("(failed)", 0)
    return ClassifySummary(out, classes, dict(named.most_common()), failed, carrier.origin)


def _write_rescored(out: Path, meta: OutputMeta, chunks: Any, old: RecordLayout, *, fmt: str) -> Counter[str]:
    """Write every chunk of records scored again in ``meta``'s layout; returns the classes named."""
    named: Counter[str] = Counter()
    with _staged(out) as staging, open_output(staging, meta, fmt=fmt) as w:
        for records in chunks:
            chunk = meta.layout.rescored(records, old)
            named.update(r.get("class", "(failed)") for r in chunk)
            w.write(chunk)
    return named


@contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A hidden file beside ``out`` to write the whole output into; only when it is complete does it
    (and its header) replace ``out``, so a killed run leaves the old ``out`` as it was, never a
    half-written one. ``out``'s lock is held throughout: one run at a time, as for ``tag``."""
    staging = out.with_name(f".{out.stem}.writing{out.suffix}")
    with OutputLock(out):
        for p in (staging, meta_path(staging), partial_path(staging)):
            p.unlink(missing_ok=True)  # a killed run's leftovers
        try:
            yield staging
        except BaseException:
            for p in (staging, meta_path(staging), partial_path(staging)):
                p.unlink(missing_ok=True)
            raise
        meta_path(out).unlink(missing_ok=True)  # Parquet carries its header inside
        if meta_path(staging).exists():
            os.replace(meta_path(staging), meta_path(out))
        os.replace(staging, out)
        fsync_dir(out.parent)


def _format(out: str | os.PathLike, fmt: str | None) -> str:
    """The output format, refusing a ``fmt`` that another format's extension contradicts."""
    chosen = output_format(out, fmt)
    try:
        named = output_format(out)
    except OutputError:
        return chosen  # an extension that names no format: ``fmt`` chooses
    if named != chosen:
        raise AttrtagError(f"`fmt={fmt}` contradicts `out={out}`, whose extension names {named}; "
                           f"drop `fmt`, or name the file .{chosen}")
    return chosen


def _rescorable(tags: Path, out: Path, *, overwrite: bool, rules_given: bool) -> tuple[OutputMeta, Any]:
    """The header of a tag output whose classes can be scored again, and its records in chunks."""
    if not tags.is_file():
        raise AttrtagError(f"{tags}: tag output {'is a folder' if tags.is_dir() else 'not found'}")
    _check_out(out, overwrite, same_as=tags)
    found, chunks = iter_output(tags, chunk=CHUNK)  # streamed: memory bounded by one chunk
    if found.layout.top_k is not None:
        k = found.layout.top_k
        raise AttrtagError(
            f"{tags} was written with `top_k={k}`: it keeps only the {k} most probable values "
            "of each group and class scores need the full distributions; tag again without `top_k`"
        )
    if not rules_given and found.layout.classes is None:
        raise AttrtagError(f"{tags} was tagged without class rules; pass `rules=R`")
    return found, chunks


def report(
    tags: str | os.PathLike,
    out: str | os.PathLike,
    *,
    root: str | os.PathLike | None = None,
    thumbnails: str = "embed",
    thumb_size: int = 128,
    thresholds: Thresholds | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], Any] | None = None,
) -> "ReportSummary":
    """One self-contained HTML page to look at a tag output (``datasets/REVIEW.md``).

    Args:
        tags: an output of ``attrtag tag``.
        out: the HTML file.
        root: the folder relative image paths are relative to (default: the current one).
        thumbnails: ``embed`` (self-contained) or ``link`` (to the images, relative to the page).
        thumb_size: embedded thumbnail side, 16 to 512 pixels.
        thresholds: "uncertain" below this (as :func:`attrtag.load`'s; default: the
            thresholds the tags were written with, else 0.5).
        workers: thumbnail decode threads (default: the usable CPUs, 1 to 8).
        overwrite: replace ``out`` when it exists.
        progress: called as ``progress(done, total)`` while thumbnails are made.
    """
    from ..review.report import write_report
    from ..review.sources import load_tags
    from ..runtime.threads import usable_cpus

    out = Path(out)
    _check_out(out, overwrite)
    # No model runs beside the thumbnails: every usable CPU may decode (up to 8).
    workers = max(1, min(8, usable_cpus())) if workers is None else workers
    if workers < 0:
        raise AttrtagError(f"`workers` must be 0 or more, got {workers}")
    loaded = load_tags(tags, root=root)
    todo = len(loaded.tagged) if thumbnails == "embed" else 0
    return write_report(loaded, out, thumbnails=thumbnails, thumb_size=thumb_size, workers=workers,
                        thresholds=split_thresholds(thresholds, loaded.schema)[0] if thresholds is not None else None,
                        progress=None if progress is None else lambda n: progress(n, todo))


def to_fiftyone(tags: str | os.PathLike, out: str | os.PathLike, *, root: str | os.PathLike | None = None,
                overwrite: bool = False) -> tuple[int, int, list[str]]:
    """A FiftyOneImageLabelsDataset folder of the tags.

    Returns:
        Samples written, failed images left out, and the Python lines that import the folder
        (two with multi-label groups: FiftyOne reads those in a pass of their own).
    """
    from ..review.fiftyone import import_code, write_fiftyone
    from ..review.sources import load_tags

    _check_out(Path(out), overwrite, folder=True)
    loaded = load_tags(tags, root=root)
    n = write_fiftyone(loaded, out)
    lines = import_code(out, loaded.schema, with_class=loaded.meta.layout.classes is not None)
    return n, len(loaded.records) - len(loaded.tagged), lines


def to_labelstudio(
    tags: str | os.PathLike, out: str | os.PathLike, *, root: str | os.PathLike | None = None,
    document_root: str | os.PathLike | None = None, image_url: str | None = None, overwrite: bool = False,
) -> tuple[int, int, Path]:
    """A Label Studio project of the tags (tasks, least sure first, and the labelling config).

    Returns:
        Tasks written, failed images left out, and the document root image URLs are relative to.
    """
    from ..review.labelstudio import LOCAL_FILES_URL, write_labelstudio
    from ..review.sources import load_tags

    _check_out(Path(out), overwrite, folder=True)
    loaded = load_tags(tags, root=root)
    n, doc_root = write_labelstudio(loaded, out, document_root=document_root, url_prefix=image_url or LOCAL_FILES_URL)
    return n, len(loaded.records) - len(loaded.tagged), doc_root


def from_labelstudio(export: str | os.PathLike, schema: str | os.PathLike | Schema, out: str | os.PathLike, *,
                     root: str | os.PathLike | None = None, overwrite: bool = False) -> list["Correction"]:
    """A manifest CSV from Label Studio's JSON export of the tasks: the corrections to train on."""
    from ..review.corrections import read_labelstudio_export, write_manifest

    _check_out(Path(out), overwrite)
    schema = schema if isinstance(schema, Schema) else Schema.load(schema)
    corrections = read_labelstudio_export(export, schema, root=root)
    if not corrections:
        raise ManifestError(f"{export}: no annotated task in the export: nothing to write (annotate and submit tasks "
                            "in Label Studio, then export again)")
    write_manifest(corrections, schema, out)
    return corrections


def suggest_rules(
    manifest: str | os.PathLike,
    class_column: str,
    out: str | os.PathLike,
    *,
    schema: str | os.PathLike | Schema | None = None,
    groups: Sequence[str] | None = None,
    cover: float = 0.8,
    max_values: int = 3,
    min_images: int = 1,
    splits: Sequence[str] | None = None,
    header: Callable[[int], str] | None = None,
    overwrite: bool = False,
    warn: Warn | None = None,
) -> tuple["DraftRules", int]:
    """Draft class rules from a labelled manifest with a class column, and write them as YAML.

    Args:
        manifest: CSV or JSONL with labels and ``class_column``.
        class_column: the column holding each image's class.
        out: the rules YAML to write.
        schema: the schema the rules must fit (default: the CSV's other columns, or ``groups``).
        groups: the CSV columns to use as groups (without ``schema``).
        cover, max_values, min_images: see :func:`attrtag.zeroshot.suggest.suggest_rules`.
        splits: read only these splits (default: every split but test).
        header: the comment the file starts with, given the number of rows read.
        overwrite: replace ``out`` when it exists.
        warn: called with each lint warning of the written rules (default: ignored).

    Returns:
        The draft and the number of rows it was drafted from.
    """
    from ..zeroshot.rules import Rules
    from ..zeroshot.suggest import suggest_rules as _suggest

    out, manifest = Path(out), Path(manifest)
    _check_out(out, overwrite)
    if not manifest.is_file():
        raise AttrtagError(f"{manifest}: manifest {'is a folder' if manifest.is_dir() else 'not found'}")
    schema = _schema_for(manifest, schema, groups, class_column)
    rows = read_manifest(manifest, schema, check_files=False).samples
    samples = _rows_to_draft(rows, splits, class_column, schema, manifest)
    draft = _suggest(samples, schema, class_column, cover=cover, max_values=max_values, min_images=min_images)
    text = draft.to_yaml(header(len(samples)) if header else "")
    # Loaded as tagging will load it, with `out:line` in messages, before anything is written:
    # a draft that cannot be used is never left behind. The write itself is atomic.
    class_scoring(schema, Rules.load(out, schema, text=text), warn=warn)
    write_text(out, text)
    return draft, len(samples)


def _rows_to_draft(rows: Sequence[Any], splits: Sequence[str] | None, class_column: str, schema: Schema,
                   manifest: Path) -> list[Any]:
    """The rows of ``splits`` (default: all but test), refusing splits and a class column it lacks."""
    if class_column in schema:
        raise AttrtagError(f"`class_column={class_column}` is a group of the schema; name the column that holds "
                           "each image's class, and leave it out of the groups")
    if rows and not any(class_column in s.extra for s in rows):
        columns = sorted({k for s in rows for k in s.extra})
        raise AttrtagError(f"`class_column={class_column}`: {manifest} has no such column "
                           f"(other columns: {', '.join(columns) or 'none'})")
    names = sorted({s.split or "" for s in rows})
    unknown = [x for x in splits or () if x not in names]
    if unknown:
        raise AttrtagError(f"`splits={unknown[0]}`: no row of {manifest} is in that split "
                           f"(its splits: {', '.join(repr(n) for n in names)})")
    samples = [s for s in rows if s.split in splits] if splits else [s for s in rows if s.split != "test"]
    if rows and not samples:
        raise AttrtagError(f"{manifest}: every row is in the test split, which is not read by default; "
                           "pass `splits=test` to draft from it")
    return samples


def _schema_for(path: Path, schema: Any, groups: Sequence[str] | None, class_column: str) -> Schema:
    """The schema given, else one of ``groups`` or of every CSV column but path, split and the class."""
    from ..data.tables import schema_from_table

    csv_file = path.suffix.lower() == ".csv"
    header: list[str] = []
    if csv_file:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = [h.strip() for h in next(csv.reader(f), [])]
    if schema is not None:
        schema = schema if isinstance(schema, Schema) else Schema.load(schema)
        if csv_file and not set(schema.names) & set(header):
            raise AttrtagError(f"`schema`: none of its groups ({', '.join(schema.names)}) is a column of {path} "
                               f"(columns: {', '.join(header)}); pass the schema of these labels")
        return schema
    if not csv_file:
        raise AttrtagError(f"{path}: groups can only be read from a CSV's columns; pass `schema=S`")
    reserved = ("path", "split", class_column)
    for g in groups or ():
        if g not in header or g in reserved:
            why = f"no column '{g}' in" if g not in header else f"'{g}' is not an attribute column of"
            raise AttrtagError(f"`groups`: {why} {path} (attribute columns: "
                               f"{', '.join(h for h in header if h not in reserved) or 'none'})")
    groups = list(groups or [h for h in header if h not in reserved])
    if not groups:
        raise AttrtagError(f"{path}: no column to use as a group; pass `schema=S` or `groups=G1,G2`")
    return schema_from_table(path, groups)


def _check_out(out: Path, overwrite: bool, *, same_as: Path | None = None, folder: bool = False) -> None:
    """Refuse an output that cannot be written (a folder, under a file, not writable), the input,
    or an existing file without ``overwrite``."""
    check_output(out, folder=folder)
    if same_as is not None and out.exists() and os.path.samefile(same_as, out):
        raise AttrtagError(f"`out={out}` is the input file; write to another file")
    exists = out.exists() and (not folder or not out.is_dir() or any(out.iterdir()))
    if exists and not overwrite:
        raise AttrtagError(f"`out={out}` exists; pass `overwrite=True` to replace it, or choose another "
                           + ("path" if folder else "file"))
