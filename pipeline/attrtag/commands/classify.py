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
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import AttrtagError
from ..zeroshot.calibration import Calibration, given_calibration, resolve_calibration
from ..zeroshot.fields import ClassTagging
from ..zeroshot.rules import Rules
from ._rules import add_class_options, add_scoring_options, class_tagging, load_rules, note, warn

#: Records scored per call (bounds the ``(N, classes, groups)`` arrays of the scorer).
CHUNK = 4096

_DESCRIPTION = """\
Re-score a finished tag output (JSONL, CSV or Parquet) with class rules and write it again with
'class', 'class_prob', 'classes' and 'class_explanation' on every tagged record; no model runs.

The tags must hold full distributions: a file written with --top-k is refused. Rules default to
the ones the tags were written with (attrtag tag --rules, or rules embedded in the model), and so
do --class-top-k and --unknown-threshold; --set applies to this run only. The header of FILE
records the rules and options used.

Priors and calibration come from TAGS' header too (what 'attrtag tag' applied): --no-priors and
--no-calibration turn them off; a calibration holds only for the rules it was chosen with.
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
        p.add_argument("--format", choices=("jsonl", "csv", "parquet"), help="output format (default: from --out)")
        p.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
        p.set_defaults(func=run, alias=name == "infer")


def run(args: argparse.Namespace) -> int:
    """Re-score ``args.tags`` into ``args.out``; returns the exit status."""
    from ..tagging.engine import rescore
    from ..tagging.files import open_output
    from ..tagging.stream import iter_output
    from ..tagging.header import OutputMeta, output_format
    from ..tagging.records import RecordLayout

    if getattr(args, "alias", False):
        print("attrtag: note: 'infer' is an alias of 'classify' (its new name)", file=sys.stderr)

    fmt = output_format(args.out, args.format)
    tags, out = Path(args.tags), Path(args.out)
    if not tags.is_file():
        raise AttrtagError(f"{tags}: tag output not found")
    if out.exists() and os.path.samefile(tags, out):
        raise AttrtagError(f"--out {out} is the input file; write to another file")
    if out.exists() and not args.overwrite:
        raise AttrtagError(f"--out {out} exists; pass --overwrite to replace it, or choose another file")

    found, chunks = iter_output(tags, chunk=CHUNK)  # streamed: memory bounded by one chunk
    old = found.layout
    if old.top_k is not None:
        raise AttrtagError(
            f"{tags} was written with --top-k {old.top_k}: it keeps only the {old.top_k} most probable values "
            "of each group and class scores need the full distributions; tag again without --top-k"
        )
    schema = old.schema
    inherit = old.classes
    label_counts = None if args.no_priors or inherit is None else inherit.label_counts
    if args.rules:
        rules, source = load_rules(args.rules, schema, label_counts), args.rules
    elif inherit is not None:
        rules, source = inherit.rules, inherit.source or f"{tags} header"
    else:
        raise AttrtagError(f"{tags} was tagged without class rules; pass --rules R")
    calibration = _calibration(args, rules, inherit, priors=label_counts is not None, tags=tags)
    tagging = class_tagging(rules, args, schema, source=source, inherit=inherit, label_counts=label_counts,
                            calibration=calibration)
    scoring = tagging.scoring_note()
    if scoring:
        note(scoring)
    layout = RecordLayout(schema, thresholds=old.thresholds, classes=tagging)
    meta = OutputMeta(layout, model=found.model, model_sha256=found.model_sha256)

    counts: Counter[str] = Counter()
    with open_output(out, meta, fmt=fmt, overwrite=args.overwrite) as writer:
        for records in chunks:
            chunk = rescore(records, old, layout)
            counts.update(r.get("class", "(failed)") for r in chunk)
            writer.write(chunk)
    failed = counts.pop("(failed)", 0)
    top = ", ".join(f"{c} {n}" for c, n in counts.most_common(5))
    print(
        f"scored {sum(counts.values())} image(s) with {tagging.describe()}"
        + (f"; {failed} failed image(s) kept without classes" if failed else "")
        + (f"; most frequent: {top}" if top else "")
        + f" -> {out}"
    )
    return 0


def _calibration(
    args: argparse.Namespace, rules: Rules, inherit: ClassTagging | None, *, priors: bool, tags: Path
) -> Calibration | None:
    """``--gamma G`` (on ``--seen`` or the stored seen classes), else the stored calibration when
    it holds for these rules (a warning when not), else none."""
    if args.seen and args.gamma is None:
        raise AttrtagError("--seen names the classes --gamma applies to; pass --gamma G too")
    if args.gamma is not None and args.no_calibration:
        raise AttrtagError("--gamma G and --no-calibration contradict each other; pass one")
    stored = None if args.no_calibration or inherit is None else inherit.calibration
    if args.gamma is not None:
        seen = [c.strip() for c in args.seen.split(",") if c.strip()] if args.seen else None
        return given_calibration(args.gamma, rules, priors=priors, seen=seen, stored=stored, source=f"{tags} header")
    cal, why = resolve_calibration(stored, rules, priors=priors, source=f"{tags} header")
    if why:
        warn(why)
    return cal
