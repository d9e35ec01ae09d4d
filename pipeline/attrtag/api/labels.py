"""Finding wrong labels from Python: ``attrtag.audit``.

::

    result = attrtag.audit("schema.yaml", "manifest.csv", "suspects.csv", backbone="resnet18", epochs=5)
    for x in result.suspects[:20]:
        print(x.path, x.group, x.label, "->", x.suggested, round(x.score, 2))

What ``attrtag audit`` runs; it only adds printing. Needs the ``train`` extra (torch, timm).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .._files import check_output
from ..data.manifest import Manifest, read_manifest
from ..errors import AttrtagError
from ..schema import Schema
from .models import train_config

if TYPE_CHECKING:
    from ..auditing.run import AuditResult
    from ..training.config import TrainConfig


def audit(
    schema: str | os.PathLike | Schema,
    manifest: str | os.PathLike | Manifest,
    out: str | os.PathLike | None = None,
    *,
    method: str = "oof",
    folds: int = 2,
    rank_by: str = "self_confidence",
    all_labels: bool = False,
    overwrite: bool = False,
    config: "str | os.PathLike | TrainConfig | None" = None,
    progress: Any = None,
    on_fold: Callable[[int, int], Any] | None = None,
    **options: Any,
) -> "AuditResult":
    """Rank the given labels of a manifest by how likely each is wrong, per group.

    Each label is scored with a prediction the model did not fit on that image (see
    :mod:`attrtag.auditing.run` for the methods and ``datasets/AUDIT.md`` for the output).
    Unknown labels are never scored. Every row of the manifest is audited, whatever its split.

    Args:
        schema: the schema (file or :class:`Schema`).
        manifest: the labelled images (file or :class:`Manifest`).
        out: write the suspects here (``.csv`` or ``.jsonl``, and its ``.audit.json`` summary).
        method: ``oof`` (default), ``both`` or ``dynamics`` (see :mod:`attrtag.auditing.run`).
        folds: K, the out-of-fold trainings (at least 2; ``dynamics`` trains once whatever K is).
        rank_by: ``self_confidence`` (``1 - p(given)``, default) or ``normalized_margin``.
        all_labels: write every checked label, not only the flagged ones.
        overwrite: replace ``out`` when it exists.
        config: a YAML file of training options (or a config); ``options`` (the fields of
            :class:`attrtag.training.config.TrainConfig`: ``backbone``, ``image_size``,
            ``epochs``, ...) override it.
        progress: optional progress wrapper (``progress(iterable, desc, total)``).
        on_fold: called with (fold, folds) before each training.

    Returns:
        The result: ``labels`` (every checked label, most suspect first), ``suspects``,
        ``summary`` per group, and the probabilities scored.

    Raises:
        AttrtagError: a bad option, manifest or output, before any training.
    """
    from ..auditing.output import audit_format, write_audit
    from ..auditing.run import audit_manifest, check_options

    check_options(method, folds, rank_by)
    if out is not None:
        _check_out(Path(out), overwrite)
        audit_format(out)
    schema = schema if isinstance(schema, Schema) else Schema.load(schema)
    cfg = train_config(config, **options)
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest, schema, skip_bad=cfg.skip_bad_rows)
    result = audit_manifest(cfg, schema, manifest, method=method, folds=folds, rank_by=rank_by,
                            progress=progress, on_fold=on_fold)
    if out is not None:
        rows = result.labels if all_labels else result.suspects
        write_audit(out, rows, _meta(result, cfg, schema, manifest, all_labels))
    return result


def _check_out(out: Path, overwrite: bool) -> None:
    from ..auditing.output import sidecar

    check_output(out, what="out")
    for path in (out, sidecar(out)):
        if path.exists() and not overwrite:
            raise AttrtagError(f"`out={out}`: {path.name} exists; pass `overwrite=True` to replace it, "
                               "or choose another path")


def _meta(result: "AuditResult", cfg: "TrainConfig", schema: Schema, manifest: Manifest, all_labels: bool
          ) -> dict[str, Any]:
    from ..auditing.output import summary_dict

    return {
        "rows": "all" if all_labels else "suspects",
        "manifest": os.path.abspath(manifest.source), "method": result.method, "folds": result.folds,
        "rank_by": result.rank_by,
        "trainings": result.trainings, "seconds": round(result.seconds, 1),
        "training": {k: cfg.to_dict()[k] for k in ("backbone", "pretrained", "image_size", "epochs", "batch_size",
                                                   "lr", "seed")},
        "schema": schema.to_dict(), "groups": summary_dict(result.summary),
        "not_checked": len(result.not_checked),
    }


def report_suspects(audit_file: str | os.PathLike, out: str | os.PathLike, *, thumbnails: str = "embed",
                    thumb_size: int = 128, workers: int | None = None, overwrite: bool = False,
                    progress: Callable[[int, int], Any] | None = None) -> tuple[int, int]:
    """One HTML page of an audit's rows: thumbnail, given vs suggested value, filter by group.

    What ``attrtag report AUDIT_FILE`` runs (``attrtag.report`` for tag files).

    Returns:
        The rows shown, and the images without a thumbnail (moved or unreadable).
    """
    from ..auditing.output import read_audit
    from ..review.suspects import write_suspects_report
    from ..runtime.threads import usable_cpus

    _check_new(Path(out), overwrite)
    workers = max(1, min(8, usable_cpus())) if workers is None else workers
    if workers < 0:
        raise AttrtagError(f"`workers` must be 0 or more, got {workers}")
    audit = read_audit(audit_file)
    todo = len({r["path"] for r in audit.rows}) if thumbnails == "embed" else 0
    return write_suspects_report(audit, out, thumbnails=thumbnails, thumb_size=thumb_size, workers=workers,
                                 progress=None if progress is None else lambda n: progress(n, todo))


def suspects_to_labelstudio(audit_file: str | os.PathLike, out: str | os.PathLike, *,
                            document_root: str | os.PathLike | None = None, image_url: str | None = None,
                            overwrite: bool = False) -> tuple[int, Path]:
    """A Label Studio project of an audit's suspects: one task per image, most suspect first, each
    group in doubt prefilled with the manifest's label (``datasets/AUDIT.md``).

    What ``attrtag convert AUDIT_FILE --to labelstudio`` runs. The export comes back with
    :func:`corrected_manifest` (or as corrections alone, ``attrtag.from_labelstudio``).

    Returns:
        Tasks written, and the document root image URLs are relative to.
    """
    from ..auditing.output import read_audit
    from ..review.labelstudio import LOCAL_FILES_URL
    from ..review.suspects import write_suspects_labelstudio

    check_output(out, what="out", folder=True)
    if Path(out).exists() and not overwrite:
        raise AttrtagError(f"`out={out}` exists; pass `overwrite=True` to replace it, or choose another path")
    audit = read_audit(audit_file)
    return write_suspects_labelstudio(audit, out, document_root=document_root,
                                      url_prefix=image_url or LOCAL_FILES_URL)


def corrected_manifest(export: str | os.PathLike, schema: str | os.PathLike | Schema,
                       manifest: str | os.PathLike, out: str | os.PathLike, *,
                       root: str | os.PathLike | None = None, overwrite: bool = False) -> tuple[int, int]:
    """``manifest`` with the labels reviewed in Label Studio (its JSON export) put in place.

    Each reviewed group's cell replaces the manifest's; groups not reviewed keep their labels.
    What ``attrtag convert EXPORT --from labelstudio --manifest M`` runs.

    Returns:
        Rows changed, and reviewed images the manifest does not have.
    """
    from ..review.corrections import read_labelstudio_export
    from ..review.suspects import apply_corrections, reviewed_groups

    _check_new(Path(out), overwrite)
    if Path(out).resolve() == Path(manifest).resolve():
        raise AttrtagError(f"`out={out}` is the manifest itself; write the corrected manifest to another file")
    schema = schema if isinstance(schema, Schema) else Schema.load(schema)
    corrections = read_labelstudio_export(export, schema, root=root)
    return apply_corrections(manifest, schema, corrections, out, reviewed_groups(export, root))


def _check_new(out: Path, overwrite: bool) -> None:
    check_output(out, what="out")
    if out.exists() and not overwrite:
        raise AttrtagError(f"`out={out}` exists; pass `overwrite=True` to replace it, or choose another path")
