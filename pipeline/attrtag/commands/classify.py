"""``attrtag classify TAGS --out FILE``: name classes from an existing tag output, without the model.

Re-scores the attribute distributions stored in a finished ``attrtag tag`` output with class
rules (``--rules R``, or the rules the tags were written with) and writes the same records with
new class fields (see ``datasets/OUTPUT.md``): the same ``class``/``classes`` that
``attrtag tag --rules R`` would have written. Use it to try other rules, a threshold, or an
intervention (``--set bill=duck``) on thousands of images in seconds. ``attrtag infer`` is the
old name of this command and still works (it says that it is an alias).
"""
from __future__ import annotations

import argparse
from typing import Any

from ..cli import say
from ._rules import add_class_options, add_scoring_options, class_options, warn

_DESCRIPTION = """\
Re-score a finished tag output (JSONL, CSV or Parquet) with class rules and write it again with
'class', 'class_prob', 'classes' and 'class_explanation' on every tagged record; no model runs.

The tags must hold full distributions: a file written with --top-k is refused. Rules default to
the ones the tags were written with (attrtag tag --rules, or rules embedded in the model), and so
do --class-top-k and --unknown-threshold; --set applies to this run only. The header of FILE
records the rules and options used.

Priors and calibration come from TAGS' header too (what 'attrtag tag' applied): --no-priors and
--no-calibration turn them off; a calibration holds only for the rules it was chosen with. TAGS
written without rules holds neither: they come from the model that tagged it (--model, else the
model named in TAGS' header when it lies beside TAGS or in the current folder, checked by
SHA-256), so that the classes are those 'attrtag tag MODEL --rules R' names; without it a
warning says that they are scored without priors and calibration.
--gamma G applies calibrated stacking with the constant G instead, to the seen classes of the
stored calibration or the ones named by --seen.
"""


def register(sub: Any) -> None:
    """Add ``classify`` and its old name ``infer`` to ``sub`` (an argparse subparsers object)."""
    for name, helptext in (
        ("classify", "name classes from an existing tag output with rules (no model)"),
        ("infer", "alias of 'classify' (its old name)"),
    ):
        p = sub.add_parser(name, help=helptext, description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("tags", metavar="TAGS", help="output of 'attrtag tag' (.jsonl/.csv with its .meta.json, .parquet)")
        p.add_argument("--out", required=True, metavar="FILE", help="output file: .jsonl, .csv or .parquet")
        p.add_argument("--rules", metavar="R", help="class rules YAML (default: the rules in TAGS' header)")
        add_class_options(p, defaults_from=", or TAGS' own")
        add_scoring_options(p, source="TAGS' header")
        p.add_argument("--gamma", type=float, metavar="G",
                       help="calibrated stacking with this constant: subtract G from the scores of the seen classes")
        p.add_argument("--seen", metavar="A,B,...",
                       help="the seen classes --gamma applies to (default: those of the stored calibration)")
        p.add_argument("--model", dest="model_file", metavar="MODEL",
                       help="the model that tagged TAGS: its label priors and calibration (default: the header's, "
                       "else the model it names, beside TAGS or here)")
        p.add_argument("--format", choices=("jsonl", "csv", "parquet"), help="output format (default: from --out)")
        p.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
        p.set_defaults(func=run, alias=name == "infer")


def run(args: argparse.Namespace) -> int:
    """Re-score ``args.tags`` into ``args.out``; returns the exit status."""
    from .. import api

    if getattr(args, "alias", False):
        say("note", "'infer' is an alias of 'classify' (its new name)")
    seen = [c.strip() for c in args.seen.split(",") if c.strip()] if args.seen else None
    summary = api.classify(args.tags, args.out, rules=args.rules, **class_options(args), gamma=args.gamma, seen=seen,
                           model_file=args.model_file, fmt=args.format, overwrite=args.overwrite, warn=warn)
    if summary.origin:
        say("note", summary.origin)
    scoring = summary.classes.scoring_note()
    if scoring:
        say("note", scoring)
    top = ", ".join(f"{c} {n}" for c, n in list(summary.named.items())[:5])
    print(
        f"scored {sum(summary.named.values())} image(s) with {summary.classes.describe()}"
        + (f"; {summary.failed} failed image(s) kept without classes" if summary.failed else "")
        + (f"; most frequent: {top}" if top else "")
        + f" -> {summary.out}"
    )
    return 0
