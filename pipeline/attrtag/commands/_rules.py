"""Class rules on the command line, shared by ``tag``, ``classify``, ``evaluate`` and ``export``.

The options are parsed here and handed to the API (:func:`attrtag.zeroshot.scoring.class_scoring`
builds the scoring). A rules file that cannot be used raises
:class:`~attrtag.errors.AttrtagError` naming file and line: one line and exit status 2. Rules
that are legal but cannot work (a class that constrains nothing, identical classes, ...) come
back through ``warn`` and are printed as ``attrtag: warning:`` lines; the command goes on.
"""
from __future__ import annotations

import argparse
import logging
from typing import Any, Sequence

from ..cli import say
from ..errors import AttrtagError
from ..zeroshot.scoring import DEFAULT_CLASS_TOP_K, ClassScoring

_logger = logging.getLogger(__name__)


def add_class_options(p: argparse.ArgumentParser, *, defaults_from: str = "") -> None:
    """Add ``--class-top-k``, ``--unknown-threshold`` and ``--set`` to a parser.

    Args:
        p: the subcommand's parser.
        defaults_from: appended to the default descriptions (e.g. where else defaults come from).
    """
    p.add_argument(
        "--class-top-k", type=int, metavar="K",
        help=f"classes listed in 'classes' (default: {DEFAULT_CLASS_TOP_K}{defaults_from})",
    )
    p.add_argument(
        "--unknown-threshold", type=float, metavar="P",
        help="write class 'unknown' when the best class's probability is below P; the probabilities "
        f"are a softmax over the classes of the rules, so choose P for a rule set (default: 0 = never{defaults_from})",
    )
    p.add_argument(
        "--set", action="append", default=[], metavar="GROUP=VALUE", dest="overrides",
        help="intervention: score classes as if GROUP had VALUE (the record's own GROUP fields keep the "
        "model's prediction); repeatable",
    )


def add_scoring_options(p: argparse.ArgumentParser, *, source: str = "the model", temperatures: bool = False) -> None:
    """Add ``--no-priors`` and ``--no-calibration``: turn off what travels with the model
    (``temperatures``: the command runs the model, so the flag also gives raw probabilities)."""
    p.add_argument("--no-priors", action="store_true",
                   help=f"do not divide class scores by the training label priors stored in {source}")
    raw = "; nor the per-group temperatures: the records get the model's raw probabilities" if temperatures else ""
    p.add_argument("--no-calibration", action="store_true",
                   help=f"do not apply the zero-shot calibration stored in {source} (attrtag calibrate){raw}")


def parse_overrides(specs: Sequence[str]) -> dict[str, str]:
    """``["bill=duck", "tail=yes"]`` -> ``{"bill": "duck", "tail": "yes"}`` (checked against the
    schema by the library).

    Raises:
        AttrtagError: a spec without ``=``, or the same group twice.
    """
    out: dict[str, str] = {}
    for spec in specs:
        group, sep, value = spec.partition("=")
        group, value = group.strip(), value.strip()
        if not sep or not group or not value:
            raise AttrtagError(f"--set {spec}: expected GROUP=VALUE, e.g. --set bill=duck")
        if group in out:
            raise AttrtagError(f"--set {spec}: group '{group}' is already set to '{out[group]}'")
        out[group] = value
    return out


def class_options(args: argparse.Namespace) -> dict[str, Any]:
    """The API's class options from :func:`add_class_options` and :func:`add_scoring_options`."""
    return {"class_top_k": args.class_top_k, "unknown_threshold": args.unknown_threshold,
            "overrides": parse_overrides(args.overrides), "priors": not args.no_priors,
            "calibration": not args.no_calibration}


def announce(classes: ClassScoring | None, *, embedded: bool) -> None:
    """Say which classes a run scores (when they came with the model) and what corrects the scores."""
    if classes is None:
        return
    if embedded:
        _logger.info("classes: %s (--no-rules to skip them)", classes.describe())
    scoring = classes.scoring_note()
    if scoring:
        say("note", scoring)


def warn(message: str) -> None:
    """A legal-but-useless rule (or option), printed as one ``attrtag: warning:`` line on stderr."""
    say("warning", message)
