"""``attrtag evaluate``: per-group accuracy, macro-F1, label counts and confusion matrices.

With ``--rules R`` and a manifest with a class column, also zero-shot class accuracy (see
:mod:`attrtag.zeroshot_report`): ZSL top-1/top-5 over the unseen classes and GZSL seen/unseen/H,
uncalibrated and with calibrated stacking (gamma chosen on the val split), on the test split.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import AttrtagError

if TYPE_CHECKING:
    from ..evaluate import Predictions
    from ..manifest import Manifest, Record
    from ..rules import Rules
    from ..schema import Schema
    from ..zeroshot_report import ZeroShotReport


def register(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="evaluate a checkpoint on a manifest", description=__doc__)
    p.add_argument("--checkpoint", required=True, help="training checkpoint (best.pt / last.pt)")
    p.add_argument("--manifest", required=True, help="CSV or JSONL manifest with labels")
    p.add_argument("--split", choices=("train", "val", "test"), help="evaluate only this split (default: all rows)")
    p.add_argument("--out", help="report folder (default: next to the checkpoint)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--skip-bad-rows", action="store_true")
    p.add_argument(
        "--rules", metavar="R",
        help="class rules YAML: also report zero-shot class accuracy on the test split (ZSL, and GZSL with "
        "calibration chosen on the val split), whatever --split says; needs a class column",
    )
    p.add_argument("--class-column", default="class", metavar="NAME", help="manifest column with each image's class "
                   "(default: class)")
    p.add_argument("--unseen", metavar="A,B,...", help="the unseen classes (default: the classes of the rules with no "
                   "image in the train split)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import load_checkpoint
    from ..evaluate import compute_metrics, predict, write_report
    from ..manifest import read_manifest
    from ..metrics import format_metrics
    from ..model import model_from_checkpoint
    from ..train import resolve_device
    from ._progress import tqdm_progress

    ckpt = load_checkpoint(args.checkpoint)
    model, prep = model_from_checkpoint(ckpt, source=args.checkpoint)
    schema = model.schema
    manifest = read_manifest(args.manifest, schema, skip_bad=args.skip_bad_rows)
    records = manifest.split(args.split)
    if not records:
        raise AttrtagError(f"{args.manifest}: no rows in split '{args.split}'")
    rules = None
    zs_records: list[Record] = []
    seen: Sequence[str] = ()
    unseen: Sequence[str] = ()
    if args.rules:
        from ..zeroshot_report import seen_and_unseen
        from ._rules import load_rules

        rules = load_rules(args.rules, schema)
        zs_records = _zero_shot_records(manifest, args)
        named = [c.strip() for c in args.unseen.split(",") if c.strip()] if args.unseen else None
        train_classes = [c for c in _classes_of(manifest.split("train"), args.class_column) if c]
        seen, unseen = seen_and_unseen(rules, train_classes, named)
    elif args.unseen:
        raise AttrtagError("--unseen needs --rules R")
    # One pass over every image either report needs.
    wanted = {id(r) for r in records} | {id(r) for r in zs_records}
    device = resolve_device(args.device)
    model.to(device)
    all_preds = predict(model, [r for r in manifest.records if id(r) in wanted], prep, device=device,
                        batch_size=args.batch_size, workers=args.workers, progress=tqdm_progress)
    preds = _take(all_preds, records) if zs_records else all_preds
    metrics = compute_metrics(schema, preds)
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / f"eval_{Path(args.manifest).stem}"
    extra = {
        "checkpoint": str(args.checkpoint),
        "manifest": str(args.manifest),
        "split": args.split,
        "images": len(records),
        "failed_images": [{"path": p, "reason": r} for p, r in preds.failed],
    }
    zero_shot = None
    if rules is not None:
        zero_shot = _zero_shot(all_preds, rules, schema, manifest, args.class_column, seen=seen, unseen=unseen)
        extra["zero_shot"] = {
            "rules": str(args.rules), "class_column": args.class_column,
            "split": "test" if manifest.has_splits else None,
            "calibration_split": "val" if manifest.has_splits else None,
            **zero_shot.to_dict(),
        }
    written = write_report(out, schema, metrics, extra=extra)
    print(f"evaluated {len(preds.records)} image(s) from {args.manifest}" + (f" (split {args.split})" if args.split else ""))
    if preds.failed:
        print(f"warning: {len(preds.failed)} image(s) could not be decoded; listed in the report")
    print(format_metrics(metrics))
    if zero_shot is not None:
        from ..zeroshot_report import format_zero_shot

        where = "test split, gamma chosen on val" if manifest.has_splits else "all rows, no calibration"
        print(format_zero_shot(zero_shot, title=f"zero-shot classes ({args.rules}; {where})"))
    print(f"report: {written['json']} (+ {len(written) - 1} confusion matrix PNG(s) in {out})")
    return 0


def _classes_of(records: Sequence[Record], column: str) -> list[str | None]:
    return [(r.extra.get(column) or "").strip() or None for r in records]


def _zero_shot_records(manifest: Manifest, args: argparse.Namespace) -> list[Record]:
    """The images the zero-shot report needs: val and test (all rows without a split column)."""
    if not any(args.class_column in r.extra for r in manifest.records):
        raise AttrtagError(
            f"{args.manifest}: no '{args.class_column}' column; --rules needs each image's class "
            "(name the column with --class-column)"
        )
    if not manifest.has_splits:
        if not args.unseen:
            raise AttrtagError(
                f"{args.manifest}: no split column, so unseen classes cannot be told from training images; "
                "pass --unseen A,B,..."
            )
        return list(manifest.records)
    if not manifest.split("test"):
        raise AttrtagError(f"{args.manifest}: no 'test' rows; the zero-shot report is computed on the test split")
    return manifest.split("val") + manifest.split("test")


def _take(preds: Predictions, records: Sequence[Record]) -> Predictions:
    """The predictions of ``records`` (those that decoded), in the order of ``preds``."""
    from ..evaluate import Predictions

    wanted = {id(r) for r in records}
    rows = [i for i, r in enumerate(preds.records) if id(r) in wanted]
    paths = {r.path for r in records}
    return Predictions(
        probs={g: p[rows] for g, p in preds.probs.items()},
        targets=preds.targets[rows],
        records=[preds.records[i] for i in rows],
        failed=[f for f in preds.failed if f[0] in paths],
    )


def _zero_shot(
    preds: Predictions, rules: Rules, schema: Schema, manifest: Manifest, column: str, *,
    seen: Sequence[str], unseen: Sequence[str],
) -> ZeroShotReport:
    """ZSL/GZSL on the test split with gamma chosen on val (all rows, uncalibrated, without splits)."""
    from ..zeroshot_report import evaluate_zero_shot, labelled_scores

    def scored(split: str | None) -> Any:
        part = _take(preds, manifest.split(split))
        return labelled_scores(part.probs, _classes_of(part.records, column), rules, schema)

    if not manifest.has_splits:
        return evaluate_zero_shot(scored(None), rules, seen=seen, unseen=unseen)
    return evaluate_zero_shot(scored("test"), rules, seen=seen, unseen=unseen, val=scored("val"))
