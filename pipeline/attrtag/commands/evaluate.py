"""``attrtag evaluate``: per-group accuracy, macro-F1, label counts and confusion matrices."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import AttrtagError


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
    device = resolve_device(args.device)
    model.to(device)
    preds = predict(model, records, prep, device=device, batch_size=args.batch_size, workers=args.workers,
                    progress=tqdm_progress)
    metrics = compute_metrics(schema, preds)
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / f"eval_{Path(args.manifest).stem}"
    extra = {
        "checkpoint": str(args.checkpoint),
        "manifest": str(args.manifest),
        "split": args.split,
        "images": len(records),
        "failed_images": [{"path": p, "reason": r} for p, r in preds.failed],
    }
    written = write_report(out, schema, metrics, extra=extra)
    print(f"evaluated {len(preds.records)} image(s) from {args.manifest}" + (f" (split {args.split})" if args.split else ""))
    if preds.failed:
        print(f"warning: {len(preds.failed)} image(s) could not be decoded; listed in the report")
    print(format_metrics(metrics))
    print(f"report: {written['json']} (+ {len(written) - 1} confusion matrix PNG(s) in {out})")
    return 0
