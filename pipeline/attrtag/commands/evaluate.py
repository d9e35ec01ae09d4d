"""``attrtag evaluate``: per-group accuracy, macro-F1, label counts, confusion matrices and calibration.

The model is a training checkpoint or an exported ``.onnx`` file (which runs on ONNX Runtime,
without torch).

Held-out images by default: the test split when the manifest has one, else val; training images
only with ``--split train`` or ``--split all``, and the printout and report say which images were
scored. The report also lists the options the model was trained with (its card's ``training``).

Calibration: each group's expected calibration error (ECE, 15 bins; for a multi-label group over
every known image-value pair) with the raw probabilities and at the temperature the model card
stores (fitted on the val split during training, or by 'attrtag calibrate --temperature'), and
a reliability diagram per group (reliability_<group>.png). The other figures use the calibrated
probabilities, as 'attrtag tag' writes them.

With ``--rules R`` and a manifest with a class column, also zero-shot class accuracy (see
:mod:`attrtag.zeroshot.evaluation`): ZSL top-1/top-5 over the unseen classes and GZSL seen/unseen/H,
uncalibrated and with calibrated stacking (gamma chosen on the val split), on the test split.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Mapping

from ..data.manifest import SPLITS


def register(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="evaluate a model (checkpoint or .onnx) on a manifest", description=__doc__)
    p.add_argument("--checkpoint", "--model", dest="checkpoint", required=True, metavar="MODEL",
                   help="training checkpoint (best.pt / last.pt) or exported .onnx model")
    p.add_argument("--manifest", required=True, help="CSV or JSONL manifest with labels")
    p.add_argument("--split", choices=(*SPLITS, "all"),
                   help="the images to score (default: the test split when the manifest has one, else val); "
                        "train and all include images the model was trained on, and the report says so")
    p.add_argument("--out", help="report folder (default: next to the checkpoint)")
    p.add_argument("--overwrite", action="store_true", help="replace the report --out holds")
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
    from .. import api
    from ..cli import FLAGS
    from ..evaluation.metrics import format_metrics
    from ..zeroshot.evaluation import format_zero_shot
    from ._progress import tqdm_progress
    from ._rules import warn

    unseen = [c.strip() for c in args.unseen.split(",") if c.strip()] if args.unseen else None
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / f"eval_{Path(args.manifest).stem}"
    result = api.evaluate(args.checkpoint, args.manifest, split=args.split, rules=args.rules,
                          priors=not args.no_priors, class_column=args.class_column, unseen=unseen, out=out,
                          device=args.device, batch_size=args.batch_size, workers=args.workers,
                          skip_bad_rows=args.skip_bad_rows, progress=tqdm_progress, warn=warn,
                          overwrite=args.overwrite)
    preds = result.predictions
    print(f"evaluated {len(preds.samples)} image(s) from {args.manifest}: {result.note}")
    if result.includes_training:
        print("note: these figures include training images; score held-out images (--split test) to judge the model")
    print(f"trained with: {describe_training(result.training)}")
    if preds.failed:
        print(f"warning: {len(preds.failed)} image(s) could not be decoded; listed in the report")
    print(format_metrics(result.metrics))
    print(format_calibration(result.calibration))
    if result.zero_shot is not None:
        title = f"zero-shot classes ({args.rules}; {result.zero_shot_note})"
        print(format_zero_shot(result.zero_shot, title=title, flags=FLAGS))
    figures = sum(1 for k in result.report if k.startswith("reliability/"))
    print(f"report: {result.report['json']} (+ {len(result.report) - 1 - figures} confusion matrix PNG(s) and "
          f"{figures} reliability diagram(s) in {out})")
    return 0


def format_calibration(groups: Any) -> str:
    """Each group's temperature and ECE raw / calibrated (:class:`attrtag.evaluation.temperature.GroupCalibration`)."""
    def ece(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.4f}"

    width = max([5, *(len(c.group) for c in groups)])
    lines = [f"calibration (ECE over {groups[0].raw.counts.size if groups else 15} confidence bins):",
             f"  {'group':<{width}}  {'T':>7}  {'ECE raw':>8}  {'ECE calibrated':>14}  {'over':>6}"]
    for c in groups:
        lines.append(f"  {c.group:<{width}}  {c.temperature:>7.3f}  {ece(c.raw.ece):>8}  {ece(c.calibrated.ece):>14}  "
                     f"{c.labelled:>6}")
    lines.append("  (T: the temperature the model stores, 1 = none; over: labelled images, or image-value pairs of a "
                 "multi-label group)")
    return "\n".join(lines)


def describe_training(options: Mapping[str, Any] | None) -> str:
    """The learning options a model's card records, in one line ("not recorded" for older models)."""
    if options is None:
        return "not recorded (a model trained before attrtag recorded its options)"
    text = ", ".join(f"{k} {v}" for k, v in options.items())
    return text + ("; the weights are the EMA" if "ema_decay" in options else "")
