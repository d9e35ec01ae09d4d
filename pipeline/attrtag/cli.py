"""The ``attrtag`` command line: a parser built from an argv list, one module per subcommand.

Each module in :mod:`attrtag.commands` exposes ``register(subparsers)``, which adds its parser
and sets ``func``: parse, call the Python API (:mod:`attrtag.api`), print. :func:`main` turns
:class:`AttrtagError` (bad input) into one line on stderr and exit status 2, with the library's
parameter names spelled as this command line's flags (:data:`FLAGS`); a KeyboardInterrupt exits
130. Other exceptions are bugs and keep their traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import NoReturn, Sequence

from . import __version__
from .errors import AttrtagError, first_line, spell

# Imported lazily by name: ``attrtag tag model.onnx`` must not pay for (or need) torch.
COMMANDS = ("demo", "train", "evaluate", "export", "calibrate", "tag", "classify", "rules", "convert", "report",
            "audit")
#: Old names that still work: name -> the module that registers them.
ALIASES = {"infer": "classify"}

#: The one table from the library's parameters to this command line's flags (see
#: :mod:`attrtag.errors`): library messages say ``top_k``, the CLI says ``--top-k``. A
#: ``name=value`` key spells a switch (``priors=False`` is ``--no-priors``); any other
#: ``name=value`` becomes ``FLAG value``. ``tests/test_flags.py`` checks that every parameter a
#: library message names is here and that every flag here exists.
FLAGS: dict[str, str] = {
    # tagging a folder: attrtag.load(...) and Tagger.tag_to(...)
    "model": "MODEL", "inputs": "INPUT", "out": "--out", "fmt": "--format", "device": "--device",
    "batch_size": "--batch-size", "workers": "--workers", "worker_kind": "--worker-kind", "threads": "--threads",
    "top_k": "--top-k", "thresholds": "--threshold", "max_pixels": "--max-pixels", "trt_cache_dir": "--trt-cache-dir",
    "overwrite=True": "--overwrite", "retry_failed=True": "--retry-failed", "engine": "--engine",
    "address": "--ray-address", "actors": "--actors", "gpus_per_actor": "--gpus-per-actor",
    # class scoring (tag, classify, evaluate, calibrate, export)
    "rules": "--rules", "rules=False": "--no-rules", "class_top_k": "--class-top-k",
    "unknown_threshold": "--unknown-threshold", "overrides": "--set", "priors=False": "--no-priors",
    "calibration=False": "--no-calibration", "gamma": "--gamma", "seen": "--seen", "unseen": "--unseen",
    "model_file": "--model",
    "class_column": "--class-column", "split": "--split", "manifest": "--manifest", "in_place=True": "--in-place",
    "checkpoint": "--checkpoint", "skip_bad_rows=True": "--skip-bad-rows",
    "value_thresholds=True": "--thresholds", "temperature=True": "--temperature",
    # export
    "opset": "--opset", "fp16=True": "--fp16", "int8=True": "--int8", "calib_manifest": "--calib-manifest",
    "calib_images": "--calib-images", "eval_images": "--eval-images", "batch_check": "--batch-check",
    # train
    "schema": "--schema", "config": "--config", "backbone": "--backbone", "pretrained": "--pretrained",
    "image_size": "--image-size", "resume": "--resume", "ema=True": "--ema", "sync_bn=True": "--sync-bn",
    "resume=True": "--resume", "crop_mode": "--crop-mode", "epochs": "--epochs", "lr": "--lr",
    "weight_decay": "--weight-decay", "warmup_epochs": "--warmup-epochs", "min_lr_ratio": "--min-lr-ratio",
    "layer_decay": "--layer-decay", "head_epochs": "--head-epochs",
    "label_smoothing": "--label-smoothing", "group_weights": "--group-weight", "loss": "--loss",
    "drop_rate": "--drop-rate", "seed": "--seed", "val_fraction": "--val-fraction",
    "max_steps_per_epoch": "--max-steps-per-epoch", "ema_decay": "--ema-decay", "logit_adjust": "--logit-adjust",
    "complete": "--complete", "complete_threshold": "--complete-threshold", "complete_start": "--complete-start",
    "complete_weight": "--complete-weight", "group_balance": "--group-balance",
    # rules suggest, report, convert
    "cover": "--cover", "max_values": "--max-values", "min_images": "--min-images", "groups": "--groups",
    "splits": "--split", "thumbnails": "--thumbnails",
    "thumb_size": "--thumb-size", "root": "--root", "document_root": "--document-root", "image_url": "--image-url",
    # audit
    "method": "--method", "folds": "--folds", "rank_by": "--rank-by", "all_labels=True": "--all",
}


#: Modules that an install extra brings: a command that needs one says which extra, in one line.
EXTRAS = {m: "train" for m in ("torch", "torchvision", "timm", "albumentations", "onnx", "onnxscript", "matplotlib")}


class _Parser(argparse.ArgumentParser):
    """argparse, with a mistake on one line as every other attrtag error (its usage block of a dozen
    lines buried the message); ``--help`` still shows the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(commands: Sequence[str] = COMMANDS) -> argparse.ArgumentParser:
    """The full parser; tests call ``build_parser().parse_args([...])`` directly."""
    parser = _Parser(
        prog="attrtag", description="Grouped-softmax attribute tagging: train, evaluate, export, calibrate, tag, classify."
    )
    parser.add_argument("--version", action="version", version=f"attrtag {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in commands:
        try:
            module = importlib.import_module(f"attrtag.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name and err.name.startswith("attrtag.commands"):
                continue  # command not built yet
            raise
        module.register(sub)  # a module may register aliases too (classify registers infer)
    return parser


def _command_from_argv(argv: Sequence[str]) -> list[str]:
    # Build only the parser of the command being run, so its imports (torch for training,
    # onnxruntime for tagging) are the only ones paid for.
    for a in argv:
        if a in COMMANDS:
            return [a]
        if a in ALIASES:
            return [ALIASES[a]]
    return list(COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``attrtag`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_from_argv(argv))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    # Imported here: parsing arguments (and `--help`) needs neither numpy nor Pillow.
    from .data.images import quiet_pillow_size_warning

    quiet_pillow_size_warning()  # each image refused for its size gets its own `bomb` record
    try:
        return int(args.func(args) or 0)
    except ModuleNotFoundError as err:
        extra = EXTRAS.get((err.name or "").partition(".")[0])
        if extra is None:
            raise
        _said(f"attrtag: error: attrtag {args.command} needs the '{extra}' extra ({err.name} is not installed): "
              f"pip install 'attrtag[{extra}]'")
        return 2
    except AttrtagError as err:
        _said(f"attrtag: error: {err.spelled(FLAGS)}")
        return 2
    except KeyboardInterrupt:
        _said("attrtag: interrupted")
        return 130
    except OSError as err:
        # What the checks before the work cannot foresee (a disk that fills, a permission or a
        # mount that changes mid-run) names its file in one line, as pip does; an OSError
        # without a file is not the user's and keeps its traceback.
        if err.filename is None:
            raise
        print(f"attrtag: error: {err.filename}: {err.strerror or first_line(err)}", file=sys.stderr)
        return 2


def _said(line: str) -> None:
    """The one line a mistake or Ctrl-C ends with, from torchrun's rank 0 only.

    Every process of a torchrun job checks the same arguments and files, and rank 0 decides for
    all whether a run may start, so N processes would print the same line N times (once run
    together on one line). The others keep it in their debug log and exit with the same status.
    """
    if os.environ.get("RANK", "0") == "0":
        print(line, file=sys.stderr, flush=True)
    else:
        logging.getLogger(__name__).debug("%s (rank %s; rank 0 says it)", line, os.environ["RANK"])


def say(kind: str, message: str) -> None:
    """Library text (a warning, a note) as one ``attrtag: KIND: ...`` line on stderr, in flags."""
    print(f"attrtag: {kind}: {spell(message, FLAGS)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
