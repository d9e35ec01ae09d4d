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
from ._rules import add_class_options, class_tagging, load_rules

#: Records scored per call (bounds the ``(N, classes, groups)`` arrays of the scorer).
CHUNK = 4096

_DESCRIPTION = """\
Re-score a finished tag output (JSONL, CSV or Parquet) with class rules and write it again with
'class', 'class_prob', 'classes' and 'class_explanation' on every tagged record; no model runs.

The tags must hold full distributions: a file written with --top-k is refused. Rules default to
the ones the tags were written with (attrtag tag --rules, or rules embedded in the model), and so
do --class-top-k and --unknown-threshold; --set applies to this run only. The header of FILE
records the rules and options used.
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
        p.add_argument("--format", choices=("jsonl", "csv", "parquet"), help="output format (default: from --out)")
        p.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
        p.set_defaults(func=run, alias=name == "infer")


def run(args: argparse.Namespace) -> int:
    """Re-score ``args.tags`` into ``args.out``; returns the exit status."""
    from ..tagging.engine import rescore
    from ..tagging.files import open_output, read_output
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

    found, records = read_output(tags)
    old = found.layout
    if old.top_k is not None:
        raise AttrtagError(
            f"{tags} was written with --top-k {old.top_k}: it keeps only the {old.top_k} most probable values "
            "of each group and class scores need the full distributions; tag again without --top-k"
        )
    schema = old.schema
    if args.rules:
        rules, source = load_rules(args.rules, schema), args.rules
    elif old.classes is not None:
        rules, source = old.classes.rules, old.classes.source or f"{tags} header"
    else:
        raise AttrtagError(f"{tags} was tagged without class rules; pass --rules R")
    tagging = class_tagging(rules, args, schema, source=source, inherit=old.classes)
    layout = RecordLayout(schema, thresholds=old.thresholds, classes=tagging)
    meta = OutputMeta(layout, model=found.model, model_sha256=found.model_sha256)

    counts: Counter[str] = Counter()
    with open_output(out, meta, fmt=fmt, overwrite=args.overwrite) as writer:
        for start in range(0, len(records), CHUNK):
            chunk = rescore(records[start : start + CHUNK], old, layout)
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
