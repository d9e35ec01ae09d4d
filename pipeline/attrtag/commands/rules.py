"""``attrtag rules suggest --manifest M --class-column C --out R``: draft class rules from labelled images.

For each class of the class column, per group, the values that cover a share (--cover, 80%) of
its labelled images, weighted by their share; groups that need more than --max-values values are
left out. Classes whose drafts accept the same values everywhere are reported: no model can tell
them apart. Rows of the test split are not read unless --split says so. Read the draft, edit it,
then use it with tag/evaluate/calibrate --rules (see datasets/RULES.md).
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

from ..errors import AttrtagError

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
    from .._files import write_text
    from ..data.manifest import read_manifest
    from ..schema import Schema
    from ..zeroshot.suggest import suggest_rules
    from ._rules import load_rules, warn

    out, manifest_path = Path(args.out), Path(args.manifest)
    if out.exists() and not args.overwrite:
        raise AttrtagError(f"--out {out} exists; pass --overwrite to replace it, or choose another file")
    if not manifest_path.is_file():
        raise AttrtagError(f"{manifest_path}: manifest not found")
    if args.schema:
        schema = Schema.load(args.schema)
    else:
        schema = _schema_from_columns(manifest_path, args)
    manifest = read_manifest(manifest_path, schema, check_files=False)
    samples = ([s for s in manifest.samples if s.split in args.split] if args.split
               else [s for s in manifest.samples if s.split != "test"])
    draft = suggest_rules(samples, schema, args.class_column, cover=args.cover, max_values=args.max_values,
                          min_images=args.min_images)
    splits = ", ".join(args.split) if args.split else _DEFAULT_SPLITS
    header = (f"Drafted by 'attrtag rules suggest' from {manifest_path.name} ({len(samples)} rows: {splits}; class "
              f"column {args.class_column}).\nPer group, the fewest values covering {100 * args.cover:.0f}% of a class's "
              f"labelled images, weighted by their share;\ngroups needing more than {args.max_values} values are left "
              "out. Edit before use: this describes the labels,\nnot what tells the classes apart.")
    write_text(out, draft.to_yaml(header))
    load_rules(str(out), schema)  # the file must load; prints its lint warnings
    constrained = sum(1 for c in draft.classes if c.spec)
    print(f"drafted {len(draft.classes)} class(es) from {len(samples)} row(s) of {manifest_path} ({splits}); "
          f"{constrained} constrain at least one group -> {out}")
    for names in draft.coincident:
        warn(f"classes {', '.join(names)} accept the same values in every group; no model can tell them apart "
             "(merge them, or label a group that separates them)")
    return 0


def _schema_from_columns(path: Path, args: argparse.Namespace) -> Any:
    """A schema of ``--groups``, or of every CSV column but path, split and the class column."""
    from ..data.tables import schema_from_table

    if path.suffix.lower() != ".csv":
        raise AttrtagError(f"{path}: groups can only be read from a CSV's columns; pass --schema S")
    if args.groups:
        groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    else:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = [h.strip() for h in next(csv.reader(f), [])]
        groups = [h for h in header if h not in ("path", "split", args.class_column)]
    if not groups:
        raise AttrtagError(f"{path}: no column to use as a group; pass --schema S or --groups G1,G2")
    return schema_from_table(path, groups)
