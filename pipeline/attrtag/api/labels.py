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
    method: str = "both",
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
        method: ``both`` (default), ``oof`` or ``dynamics``.
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
        "manifest": manifest.source, "method": result.method, "folds": result.folds, "rank_by": result.rank_by,
        "trainings": result.trainings, "seconds": round(result.seconds, 1),
        "training": {k: cfg.to_dict()[k] for k in ("backbone", "pretrained", "image_size", "epochs", "batch_size",
                                                   "lr", "seed")},
        "schema": schema.to_dict(), "groups": summary_dict(result.summary),
        "not_checked": len(result.not_checked),
    }
