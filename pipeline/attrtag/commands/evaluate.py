"""``attrtag evaluate``: per-group accuracy, macro-F1, label counts and confusion matrices.

With ``--rules R`` and a manifest with a class column, also zero-shot class accuracy (see
:mod:`attrtag.zeroshot.evaluation`): ZSL top-1/top-5 over the unseen classes and GZSL seen/unseen/H,
uncalibrated and with calibrated stacking (gamma chosen on the val split), on the test split.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


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
    p.add_argument("--no-priors", action="store_true",
                   help="score classes without the training label priors stored in the checkpoint")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data.manifest import read_manifest
    from ..evaluation.evaluate import evaluate, write_report
    from ..evaluation.metrics import format_metrics
    from ..runtime.torch_backend import TorchPredictor
    from ..zeroshot.evaluation import format_zero_shot
    from ._progress import tqdm_progress
    from ._rules import load_rules

    predictor = TorchPredictor.from_checkpoint(args.checkpoint, device=args.device)
    schema = predictor.schema
    manifest = read_manifest(args.manifest, schema, skip_bad=args.skip_bad_rows)
    counts = None if args.no_priors else predictor.card.label_counts
    rules = load_rules(args.rules, schema, counts) if args.rules else None
    unseen = [c.strip() for c in args.unseen.split(",") if c.strip()] if args.unseen else None
    result = evaluate(predictor, manifest, split=args.split, rules=rules, class_column=args.class_column,
                      unseen=unseen, priors=not args.no_priors, batch_size=args.batch_size, workers=args.workers, progress=tqdm_progress)
    preds = result.predictions
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / f"eval_{Path(args.manifest).stem}"
    extra: dict[str, Any] = {
        "checkpoint": str(args.checkpoint),
        "manifest": str(args.manifest),
        "split": args.split,
        "images": len(manifest.split(args.split)),
        "failed_images": [{"path": p, "reason": r} for p, r in preds.failed],
    }
    if result.zero_shot is not None:
        extra["zero_shot"] = {
            "rules": str(args.rules), "class_column": args.class_column,
            "split": "test" if manifest.has_splits else None,
            "calibration_split": "val" if manifest.has_splits else None,
            **result.zero_shot.to_dict(),
        }
    written = write_report(out, schema, result.metrics, extra=extra)
    print(f"evaluated {len(preds.samples)} image(s) from {args.manifest}" + (f" (split {args.split})" if args.split else ""))
    if preds.failed:
        print(f"warning: {len(preds.failed)} image(s) could not be decoded; listed in the report")
    print(format_metrics(result.metrics))
    if result.zero_shot is not None:
        where = "test split, gamma chosen on val" if manifest.has_splits else "all rows, no calibration"
        where += "; scores divided by the training label priors" if counts is not None else ""
        print(format_zero_shot(result.zero_shot, title=f"zero-shot classes ({args.rules}; {where})"))
    print(f"report: {written['json']} (+ {len(written) - 1} confusion matrix PNG(s) in {out})")
    return 0
