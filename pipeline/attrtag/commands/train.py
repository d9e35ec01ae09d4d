"""``attrtag train``: train a grouped attribute model on a manifest.

Under ``torchrun --nproc_per_node N -m attrtag train ...`` every process runs this command; only
rank 0 prints (and the library makes only rank 0 write files).
"""
from __future__ import annotations

import argparse
import logging
from typing import Any

from ..errors import AttrtagError
from ..training.config import COMPLETIONS, GROUP_BALANCES, LOSSES, TrainConfig


def register(sub: Any) -> None:
    D = TrainConfig()  # the defaults the help states
    p = sub.add_parser("train", help="train a grouped-softmax attribute model", description=__doc__)
    p.add_argument("--schema", required=True, help="schema YAML (groups and their values)")
    p.add_argument("--manifest", required=True, help="CSV or JSONL manifest of images and labels")
    p.add_argument("--out", required=True,
                   help="run folder for checkpoints, history and curves; one that holds a run (last.pt, best.pt or "
                        "history.json) needs --resume or --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="start again in an OUT that holds a run: its files are replaced as the new run writes its own "
                        "(after its first epoch; a run that fails before leaves the old one whole)")
    p.add_argument("--config", help="YAML file of training options; flags override it")
    p.add_argument("--backbone", help="timm model name (default resnetv2_50)")
    p.add_argument("--pretrained", nargs="?", const="timm", default=None, metavar="PATH",
                   help="start from pretrained weights: timm's own (no value), a local weights file, or an attrtag "
                        "checkpoint (e.g. an earlier run's best.pt: its weights, the head's rows of every group value "
                        "both schemas share, and its input size)")
    p.add_argument("--image-size", type=int, help="square input size (default: the backbone's)")
    p.add_argument("--crop-mode", choices=("center", "squash", "border"),
                   help="evaluation crop, timm's meaning (default: the backbone's, usually center)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int,
                   help="global batch: images per optimizer step, split across torchrun processes (default 32)")
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--warmup-epochs", type=float)
    p.add_argument("--min-lr-ratio", type=float, metavar="R",
                   help=f"the cosine ends at lr * R (default {D.min_lr_ratio})")
    p.add_argument("--layer-decay", type=float, metavar="D",
                   help="fine-tuning: each backbone layer learns at lr * D**(depth from the top), the head at lr "
                        f"(timm's layer-wise decay, e.g. 0.75 for long runs; default {D.layer_decay:g} = off; "
                        "it lost up to 7 points in a 93-step fine-tune, scripts/README.md)")
    p.add_argument("--head-epochs", type=float, metavar="E",
                   help="fine-tuning: only the head learns for the first E epochs, then the backbone warms up "
                        f"(default {D.head_epochs:g}; one head-only epoch lost up to 4 points in a 93-step "
                        "fine-tune)")
    p.add_argument("--drop-rate", type=float, metavar="P", help=f"dropout before the head (default {D.drop_rate:g})")
    p.add_argument("--val-fraction", type=float, metavar="F",
                   help=f"share of images held out for validation when the manifest has no split column "
                        f"(default {D.val_fraction})")
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--class-weights", action="store_true", default=None, help="inverse-sqrt-frequency class weights")
    p.add_argument("--group-weight", action="append", default=[], metavar="GROUP=W", help="loss weight of a group")
    p.add_argument("--loss", choices=LOSSES, help="grouped_softmax (default) or the sigmoid_bce baseline")
    _learning_arguments(p, D)
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int, help="data loading processes")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (under torchrun: each process takes its LOCAL_RANK GPU)")
    p.add_argument("--sync-bn", action="store_true", default=None,
                   help="several CUDA processes: batch norm over the global batch (SyncBatchNorm; not on the CPU)")
    p.add_argument("--max-steps-per-epoch", type=int, help="cap steps per epoch (quick runs)")
    p.add_argument("--skip-bad-rows", action="store_true", default=None,
                   help="skip manifest rows with unknown labels or missing files, and images whose repeated rows "
                        "contradict each other (counted), instead of failing")
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="CKPT",
                   help="continue a run from its last checkpoint (default OUT/last.pt) with its own options (only "
                        "--epochs, --workers, --device, --sync-bn may change); after a torchrun restart the run "
                        "resumes from OUT/last.pt by itself")
    p.set_defaults(func=run)


def _learning_arguments(p: argparse.ArgumentParser, D: TrainConfig) -> None:
    """The options for learning from partial and unbalanced labels, in a group of their own."""
    learn = p.add_argument_group(
        "partial and unbalanced labels", "which to use when: README's training section; measured in scripts/README.md")
    learn.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None,
                       help="keep an exponential moving average of the weights (timm ModelEmaV3); it is what "
                            "validation scores and best.pt/last.pt hold, so evaluate/export/tag use it")
    learn.add_argument("--ema-decay", type=float, metavar="D",
                       help=f"the average's decay after warm-up (default {D.ema_decay})")
    learn.add_argument("--logit-adjust", type=float, metavar="TAU",
                       help="long-tail correction: add TAU*log(training prior) to the logits in the loss (Menon et "
                            f"al. 2021; 1 = balanced softmax; default {D.logit_adjust:g}; 0 = off); inference is "
                            "unchanged")
    learn.add_argument("--complete", choices=COMPLETIONS,
                       help="fill missing labels with the EMA teacher's confident predictions, as hard or soft "
                            f"targets (needs --ema; default {D.complete}); given labels are never changed")
    learn.add_argument("--complete-threshold", type=float, metavar="P",
                       help=f"teacher confidence needed at the end of the curriculum (default {D.complete_threshold})")
    learn.add_argument("--complete-start", type=float, metavar="EPOCHS",
                       help="epochs before completion starts; the threshold then falls from 1 to P "
                            f"(default {D.complete_start:g})")
    learn.add_argument("--complete-weight", type=float, metavar="W",
                       help=f"weight of a filled label relative to a given one (default {D.complete_weight:g})")
    learn.add_argument("--group-balance", choices=GROUP_BALANCES,
                       help="log: divide each group's loss by log(number of values), weights of mean 1 "
                            f"(default {D.group_balance})")


FLAG_TO_FIELD = {
    "backbone": "backbone", "pretrained": "pretrained", "image_size": "image_size", "crop_mode": "crop_mode",
    "epochs": "epochs",
    "batch_size": "batch_size", "lr": "lr", "weight_decay": "weight_decay", "warmup_epochs": "warmup_epochs",
    "label_smoothing": "label_smoothing", "class_weights": "class_weights", "seed": "seed", "workers": "workers",
    "device": "device", "max_steps_per_epoch": "max_steps_per_epoch", "skip_bad_rows": "skip_bad_rows",
    "sync_bn": "sync_bn", "loss": "loss", "ema": "ema", "ema_decay": "ema_decay", "logit_adjust": "logit_adjust",
    "complete": "complete", "complete_threshold": "complete_threshold", "complete_start": "complete_start",
    "complete_weight": "complete_weight", "group_balance": "group_balance", "min_lr_ratio": "min_lr_ratio",
    "drop_rate": "drop_rate", "val_fraction": "val_fraction", "layer_decay": "layer_decay", "head_epochs": "head_epochs",
}


def parse_group_weights(items: list[str]) -> dict[str, float]:
    """``["colour=2", ...]`` -> ``{"colour": 2.0}``; a malformed item or a group given twice is an error."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise AttrtagError(f"--group-weight {item!r}: expected GROUP=NUMBER")
        if name in out:
            raise AttrtagError(f"--group-weight {item!r}: group '{name}' is given twice; give each group once")
        out[name] = number
    return out


def training_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options given on the command line, as :class:`TrainConfig` fields (they override ``--config``)."""
    options = {field: getattr(args, flag) for flag, field in FLAG_TO_FIELD.items() if getattr(args, flag) is not None}
    if args.group_weight:
        options["group_weights"] = parse_group_weights(args.group_weight)
    return options


def run(args: argparse.Namespace) -> int:
    from .. import api
    from ..data.manifest import coverage, format_coverage
    from ..evaluation.metrics import format_metrics
    from ..training.distributed import env_rank
    from ._progress import tqdm_progress

    main_process = env_rank() == 0
    if not main_process:  # the other torchrun processes print nothing but warnings and errors
        logging.getLogger("attrtag").setLevel(logging.WARNING)
    say = print if main_process else _silent
    options = training_options(args)
    cfg = api.train_config(args.config, **options)  # bad values are refused before the manifest is read

    def on_start(manifest: Any) -> None:
        if manifest.merged:
            say(f"merged {manifest.merged} manifest row(s) that repeat an earlier row's image")
        if manifest.skipped:
            say(f"skipped {len(manifest.skipped)} bad manifest row(s); first: {manifest.skipped[0]}")
        if manifest.has_splits:  # what the model learns from: the train split's labels
            train = manifest.split("train")
            say(f"{len(manifest)} images in {args.manifest}, {len(train)} in its train split; label coverage per "
                "group there:")
        else:
            train = manifest.samples
            say(f"{len(manifest)} images in {args.manifest}; label coverage per group:")
        say(format_coverage(coverage(manifest.schema, train)))

    def on_epoch(row: dict[str, Any], metrics: list[Any]) -> None:
        val = f", val loss {row['val_loss']:.3f}" if row.get("val_loss") is not None else ""
        procs = f" on {row['processes']} processes" if row.get("processes", 1) > 1 else ""
        say(f"epoch {row['epoch']}/{row.get('epochs', cfg.epochs)}: train loss {row['train_loss']:.3f}{val}, "
            f"{row['train_images_per_s']:.1f} images/s{procs}")
        if metrics:
            say(format_metrics(metrics), flush=True)

    resume = False if args.resume is None else (args.resume or True)
    # The config file and the flags, not the merged config: a resumed run compares what was given.
    result = api.train(args.schema, args.manifest, args.out, resume=resume, overwrite=args.overwrite,
                       config=args.config, **options, progress=tqdm_progress, on_start=on_start, on_epoch=on_epoch)
    if result.failed_images:
        say(f"warning: {len(result.failed_images)} training image(s) could not be decoded and were skipped")
    if result.validated:
        say(f"checkpoints: {result.last} and {result.best} (best val score {result.best_score:.3f})")
    else:
        say(f"checkpoints: {result.last} and {result.best}, both the last epoch's weights: no val images, so "
            "nothing was validated (give the manifest a split column with val rows to choose the best epoch)")
    if main_process and result.best.is_file():
        for note in (describe_temperatures(result.best), describe_value_thresholds(result.best)):
            if note:
                say(note)
    say(f"history: {result.run_dir / 'history.json'}, curves: {result.run_dir / 'curves.png'}")
    return 0


def describe_temperatures(checkpoint: Any) -> str | None:
    """The temperatures a model's probabilities are calibrated with, and on what (None without val)."""
    from ..runtime import read_card

    card = read_card(checkpoint)
    if not card.temperatures:
        return None
    per = ", ".join(f"{g} {t:.2f}" for g, t in card.group_temperatures.items())
    return (f"temperatures (fitted on {card.temperatures.get('fitted_on')}; tag and the API apply them, "
            f"--no-calibration gives raw probabilities): {per}")


def describe_value_thresholds(checkpoint: Any) -> str | None:
    """Where a model's multi-label thresholds were chosen, and the values left at the default
    (None without a multi-label group)."""
    from ..runtime import read_card

    card = read_card(checkpoint)
    chosen = card.value_thresholds
    if not card.schema.multi:
        return None
    if not chosen:
        return "value thresholds: 0.5 for every multi-label value (no val images to choose them on)"
    kept = [f"{g}.{v}" for g, vs in chosen.get("fallback", {}).items() for v in vs]
    return (f"value thresholds: best F1 per value on {chosen.get('chosen_on')}"
            + (f"; kept at {chosen.get('default')} (fewer than {chosen.get('min_positives')} labelled positives): "
               f"{', '.join(kept)}" if kept else ""))


def _silent(*args: Any, **kwargs: Any) -> None:
    """``print`` for the torchrun processes other than rank 0."""
