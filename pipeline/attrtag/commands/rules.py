"""``attrtag rules suggest --manifest M --class-column C --out R``: draft class rules from labelled images.

For each class of the class column, per group, the values that cover a share (--cover, 80%) of
its labelled images, weighted by their share; groups that need more than --max-values values are
left out. Classes whose drafts accept the same values everywhere are reported: no model can tell
them apart. Rows of the test split are not read unless --split says so. Read the draft, edit it,
then use it with tag/evaluate/calibrate --rules (see datasets/RULES.md).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

_DEFAULT_SPLITS = "every split but test"


def register(sub: Any) -> None:
    p = sub.add_parser("rules", help="work with class rules (suggest: draft rules from labelled images)",
                       description="Class rules: 'attrtag rules suggest' drafts a rules file from labelled images.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    s = actions.add_parser("suggest", help="draft a rules file from a manifest with a class column",
                           description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--manifest", required=True, metavar="M", help="CSV or JSONL manifest with labels and a class column")
    s.add_argument("--class-column", required=True, metavar="C", help="the column holding each image's class")
    s.add_argument("--out", required=True, metavar="R", help="rules YAML to write")
    groups = s.add_mutually_exclusive_group()
    groups.add_argument("--schema", metavar="S", help="schema YAML (default: the CSV's other columns, values by "
                        "frequency; give it so the rules match your model)")
    groups.add_argument("--groups", metavar="G1,G2,...", help="the CSV columns to use as groups (no --schema)")
    s.add_argument("--cover", type=float, default=0.8, metavar="SHARE",
                   help="keep the fewest values covering this share of a class's labelled images (default 0.8)")
    s.add_argument("--max-values", type=int, default=3, metavar="N",
                   help="leave a group out of a class when covering it takes more than N values (default 3)")
    s.add_argument("--min-images", type=int, default=1, metavar="N", help="leave out classes with fewer images")
    s.add_argument("--split", action="append", metavar="NAME",
                   help=f"read only this split (repeatable; default: {_DEFAULT_SPLITS})")
    s.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
    s.set_defaults(func=run_suggest)


def run_suggest(args: argparse.Namespace) -> int:
    from .. import api
    from ._rules import warn

    splits = ", ".join(args.split) if args.split else _DEFAULT_SPLITS
    groups = [g.strip() for g in args.groups.split(",") if g.strip()] if args.groups else None

    def header(rows: int) -> str:
        return (f"Drafted by 'attrtag rules suggest' from {Path(args.manifest).name} ({rows} rows: {splits}; class "
                f"column {args.class_column}).\nPer group, the fewest values covering {100 * args.cover:.0f}% of a "
                f"class's labelled images, weighted by their share;\ngroups needing more than {args.max_values} values "
                "are left out. Edit before use: this describes the labels,\nnot what tells the classes apart.")

    draft, rows = api.suggest_rules(args.manifest, args.class_column, args.out, schema=args.schema, groups=groups,
                                    cover=args.cover, max_values=args.max_values, min_images=args.min_images,
                                    splits=args.split, header=header, overwrite=args.overwrite, warn=warn)
    constrained = sum(1 for c in draft.classes if c.spec)
    print(f"drafted {len(draft.classes)} class(es) from {rows} row(s) of {args.manifest} ({splits}); "
          f"{constrained} constrain at least one group -> {args.out}")
    specs = {c.name: c.spec for c in draft.classes}
    for names in draft.coincident:
        if all(specs[n] == specs[names[0]] for n in names):
            continue  # identical rules: the lint of the written file has said so already
        warn(f"classes {', '.join(names)} accept the same values in every group; no model can tell them apart "
             "(merge them, or label a group that separates them)")
    return 0
