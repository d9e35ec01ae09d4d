"""``attrtag audit``: rank a manifest's given labels by how likely each is wrong, per group.

Parse, call :func:`attrtag.audit`, print the summary. The training options are ``attrtag
train``'s (same names, same meanings: ``attrtag.commands.train.FLAG_TO_FIELD``).
"""
from __future__ import annotations

import argparse
from typing import Any

from .train import FLAG_TO_FIELD, training_options

_DESCRIPTION = """\
Find the labels of a manifest that are likely wrong. Each given label (an exclusive group's value,
or a multi-label value known present or absent) is scored with a prediction the model did not fit
on that image: K trainings of the model you would train (--folds, default 2: each on half the
images, about the cost of one ordinary training), each predicting the fold it held out (--method
oof, the default; both adds what each training saw while it trained, dynamics trains once and
uses that alone). A label is a suspect when another value is confidently and more probably the
image's (confident learning, per-value thresholds). Unknown labels are never scored: filling them
is label completion's job.

Writes the suspects, most suspect first, to --out (.csv or .jsonl; format: datasets/AUDIT.md) with
the summary per group beside it (FILE.audit.json), and prints that summary. Every row of the
manifest is audited, whatever its split. Review them with 'attrtag report FILE' or
'attrtag convert FILE --to labelstudio'.
"""

#: attrtag train's options that an audit's trainings take (flag, argparse keywords).
TRAINING_FLAGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--backbone", {"help": "timm model name (default resnetv2_50)"}),
    ("--pretrained", {"nargs": "?", "const": "timm", "default": None, "metavar": "PATH",
                      "help": "start from pretrained weights: timm's (no value), a weights file or a checkpoint"}),
    ("--image-size", {"type": int, "help": "square input size (default: the backbone's)"}),
    ("--crop-mode", {"help": "evaluation crop: center, squash or border (default: the backbone's)"}),
    ("--epochs", {"type": int, "help": "epochs of each training (default 10)"}),
    ("--batch-size", {"type": int, "help": "images per optimizer step (default 32)"}),
    ("--lr", {"type": float}), ("--weight-decay", {"type": float}), ("--warmup-epochs", {"type": float}),
    ("--min-lr-ratio", {"type": float, "metavar": "R"}), ("--drop-rate", {"type": float, "metavar": "P"}),
    ("--label-smoothing", {"type": float}),
    ("--class-weights", {"action": "store_true", "default": None, "help": "inverse-sqrt-frequency class weights"}),
    ("--loss", {"help": "grouped_softmax (default) or sigmoid_bce"}),
    ("--logit-adjust", {"type": float, "metavar": "TAU"}),
    ("--group-balance", {"help": "none (default) or log"}),
    ("--seed", {"type": int, "help": "initialisation, data order, augmentation and the folds (default 0)"}),
    ("--workers", {"type": int, "help": "data loading processes"}),
    ("--device", {"help": "auto, cpu, cuda or cuda:N"}),
    ("--max-steps-per-epoch", {"type": int, "help": "cap steps per epoch (quick runs)"}),
    ("--skip-bad-rows", {"action": "store_true", "default": None,
                         "help": "skip manifest rows with unknown labels or missing files (counted)"}),
)


def register(sub: Any) -> None:
    p = sub.add_parser("audit", help="rank the given labels of a manifest by how likely each is wrong",
                       description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--schema", required=True, help="schema YAML (groups and their values)")
    p.add_argument("--manifest", required=True, help="CSV or JSONL manifest of images and labels")
    p.add_argument("--out", required=True, metavar="FILE", help="the suspects: FILE.csv or FILE.jsonl")
    p.add_argument("--overwrite", action="store_true", help="replace --out (and its summary) when it exists")
    p.add_argument("--method", default="oof", help="oof (default), both or dynamics: what the scores come from")
    p.add_argument("--folds", type=int, default=2, metavar="K",
                   help="out-of-fold trainings, each on (K-1)/K of the images (default 2, at least 2)")
    p.add_argument("--rank-by", default="self_confidence",
                   help="self_confidence (1 - p(given), default) or normalized_margin")
    p.add_argument("--all", dest="all_labels", action="store_true",
                   help="write every checked label, most suspect first, not only the suspects")
    p.add_argument("--config", help="YAML file of training options; flags override it")
    train = p.add_argument_group("training (attrtag train's options)")
    p.set_defaults(**dict.fromkeys(FLAG_TO_FIELD), group_weight=[])  # the train options not offered here
    for flag, kwargs in TRAINING_FLAGS:
        train.add_argument(flag, **kwargs)
    train.add_argument("--group-weight", action="append", default=[], metavar="GROUP=W", help="loss weight of a group")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import api
    from ._progress import tqdm_progress

    def on_fold(fold: int, folds: int) -> None:
        print(f"training {fold} of {folds}" + (f" (holding out fold {fold})" if args.method != "dynamics" else ""),
              flush=True)

    result = api.audit(args.schema, args.manifest, args.out, method=args.method, folds=args.folds,
                       rank_by=args.rank_by, all_labels=args.all_labels, overwrite=args.overwrite,
                       config=args.config, progress=tqdm_progress, on_fold=on_fold, **training_options(args))
    print(format_summary(result))
    if result.not_checked:
        first = next(iter(result.not_checked.items()))
        print(f"not checked: {len(result.not_checked)} image(s) without a prediction; first: {first[0]} ({first[1]})")
    rows = len(result.labels) if args.all_labels else len(result.suspects)
    print(f"{rows} {'labels' if args.all_labels else 'suspects'} -> {args.out} (summary: {args.out}.audit.json); "
          f"method {result.method}, {result.trainings} training(s), {result.seconds:.0f} s")
    return 0


def format_summary(result: Any) -> str:
    """The summary per group as a small table."""
    width = max(5, *(len(s.group) for s in result.summary))
    lines = [f"  {'group':<{width}}  {'checked':>8}  {'flagged':>8}  estimated error rate"]
    for s in result.summary:
        lines.append(f"  {s.group:<{width}}  {s.checked:>8}  {s.flagged:>8}  {100 * s.estimated_error_rate:5.1f}%")
    return "\n".join(lines)
