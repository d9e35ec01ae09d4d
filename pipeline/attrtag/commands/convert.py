"""``attrtag convert``: tags to FiftyOne or Label Studio, and Label Studio corrections to a manifest.

Parse and print only; the formats are written by :mod:`attrtag.review` and specified in
``datasets/REVIEW.md``.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import AttrtagError

TARGETS = ("fiftyone", "labelstudio")
SOURCES = ("labelstudio",)

_DESCRIPTION = """\
Hand tags on to review tools, and bring the corrections back.

  attrtag convert tags.jsonl --to fiftyone --out fo_dataset/
  attrtag convert tags.jsonl --to labelstudio --out ls_project/
  attrtag convert export.json --from labelstudio --schema schema.yaml --out corrections.csv
  attrtag convert suspects.csv --to labelstudio --out ls_review/      # an 'attrtag audit' file
  attrtag convert export.json --from labelstudio --schema schema.yaml --manifest manifest.csv --out fixed.csv

--to fiftyone writes a FiftyOneImageLabelsDataset folder: one Classification field per group
(and 'class' with rules), one Classifications field per multi-label group (the values present),
with the model's confidence; import it with
  fo.Dataset.from_dir("fo_dataset", dataset_type=fo.types.FiftyOneImageLabelsDataset)
or, with multi-label groups, with the two lines the command prints.
--to labelstudio writes tasks.json (one task per image, the tags as predictions, score = the
least sure group or multi-label value, least sure first) and config.xml (one Choices control per
group, multiple choice for a multi-label group): paste the config into the project's Labeling
Interface, then import tasks.json. An audit file (attrtag audit) becomes one task per image, most
suspect first, each group in doubt prefilled with the manifest's label and the audit's doubts shown.
--from labelstudio reads Label Studio's JSON export of those tasks and writes a manifest CSV
that 'attrtag train' takes as it is: one row per annotated task, groups in schema order, empty
cells where a group was not annotated; a multi-label group lists the values checked (dot|ring,
[] for none: unchecked values are absent). Failed images (records with 'error') are left out of
--to outputs. Relative image paths in the tags are relative to --root (default: here).
"""


def register(sub: Any) -> None:
    """Add the ``convert`` subcommand to ``sub`` (an argparse subparsers object)."""
    p = sub.add_parser(
        "convert", help="tags to FiftyOne / Label Studio; Label Studio corrections to a manifest",
        description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", metavar="INPUT", help="tag output (.jsonl/.csv/.parquet), or with --from an export")
    way = p.add_mutually_exclusive_group(required=True)
    way.add_argument("--to", metavar="TOOL", help=f"write INPUT's tags for a tool: {', '.join(TARGETS)}")
    way.add_argument("--from", dest="source", metavar="TOOL", help=f"read a tool's annotation export: {', '.join(SOURCES)}")
    p.add_argument("--out", required=True, metavar="PATH", help="folder (--to) or manifest CSV (--from)")
    p.add_argument("--schema", metavar="S", help="schema YAML the corrections must fit (--from)")
    p.add_argument("--manifest", metavar="M",
                   help="--from: write M (CSV) with the reviewed labels in place, instead of the corrections alone")
    p.add_argument("--root", metavar="DIR", help="folder relative image paths are relative to (default: here)")
    p.add_argument("--document-root", metavar="DIR",
                   help="labelstudio: LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT, image URLs are relative to it "
                   "(default: the deepest folder holding every image)")
    p.add_argument("--image-url", metavar="PREFIX",
                   help="labelstudio: prefix of image URLs (default: Label Studio's local files, /data/local-files/?d=)")
    p.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Convert; returns the exit status."""
    if args.to is not None:
        if args.to not in TARGETS:
            raise AttrtagError(f"--to {args.to}: not one of {', '.join(TARGETS)}")
        if args.schema or args.manifest:
            raise AttrtagError(f"--{'schema' if args.schema else 'manifest'} is for --from (the tags carry their "
                               "own schema)")
        if args.to != "labelstudio" and (args.document_root or args.image_url):
            raise AttrtagError("--document-root and --image-url are for --to labelstudio")
        return _to_fiftyone(args) if args.to == "fiftyone" else _to_labelstudio(args)
    if args.source not in SOURCES:
        raise AttrtagError(f"--from {args.source}: not one of {', '.join(SOURCES)}")
    if not args.schema:
        raise AttrtagError("--from labelstudio needs --schema S: the schema the manifest is for")
    if args.document_root or args.image_url:
        raise AttrtagError("--document-root and --image-url are for --to labelstudio")
    return _from_labelstudio(args)


def _left_out(failed: int) -> str:
    return f" ({failed} failed image(s) left out)" if failed else ""


def _to_fiftyone(args: argparse.Namespace) -> int:
    from .. import api

    if _is_audit(args.input):
        raise AttrtagError(f"{args.input} is an audit file: it converts --to labelstudio (a review project)")
    n, failed, lines = api.to_fiftyone(args.input, args.out, root=args.root, overwrite=args.overwrite)
    print(f"wrote {n} samples{_left_out(failed)} -> {args.out}/")
    print("import: " + "\n        ".join(lines))
    return 0


def _to_labelstudio(args: argparse.Namespace) -> int:
    from .. import api
    from ..review.labelstudio import CONFIG_FILE, TASKS_FILE

    out = Path(args.out)
    if _is_audit(args.input):
        return _suspects_to_labelstudio(args)
    n, failed, root = api.to_labelstudio(args.input, out, root=args.root, document_root=args.document_root,
                                         image_url=args.image_url, overwrite=args.overwrite)
    print(f"wrote {n} tasks{_left_out(failed)} -> {out / TASKS_FILE}, labelling config -> {out / CONFIG_FILE}")
    if not args.image_url:
        print(f"serve the images: LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true "
              f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={root} label-studio (and add a Local files storage for {root})")
    print("review least sure first: sort the data manager by prediction score, ascending")
    return 0


def _from_labelstudio(args: argparse.Namespace) -> int:
    from .. import api

    if args.manifest:
        changed, unmatched = api.corrected_manifest(args.input, args.schema, args.manifest, args.out, root=args.root,
                                                    overwrite=args.overwrite)
        extra = f"; {unmatched} reviewed image(s) are not in {args.manifest}" if unmatched else ""
        print(f"wrote {args.manifest} with the reviewed labels in place ({changed} row(s) changed{extra}) -> {args.out}")
        return 0
    corrections = api.from_labelstudio(args.input, args.schema, args.out, root=args.root, overwrite=args.overwrite)
    labels = sum(len(c.labels) for c in corrections)
    print(f"wrote {len({c.path for c in corrections})} annotated image(s), {labels} label(s) -> {args.out}")
    print(f"train on it: attrtag train --schema {args.schema} --manifest {args.out} --out runs/corrected")
    return 0


def _is_audit(path: str) -> bool:
    from ..auditing.output import is_audit

    return is_audit(path)


def _suspects_to_labelstudio(args: argparse.Namespace) -> int:
    """An audit file's suspects as a review project."""
    from .. import api
    from ..review.labelstudio import CONFIG_FILE, TASKS_FILE

    if args.root:
        raise AttrtagError(f"{args.input} is an audit file (absolute paths): --root is for tag outputs")
    n, root = api.suspects_to_labelstudio(args.input, args.out, document_root=args.document_root,
                                          image_url=args.image_url, overwrite=args.overwrite)
    out = Path(args.out)
    print(f"wrote {n} review tasks, most suspect first -> {out / TASKS_FILE}, labelling config -> {out / CONFIG_FILE}")
    if not args.image_url:
        print(f"serve the images: LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true "
              f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={root} label-studio (and add a Local files storage for {root})")
    print("then export JSON and bring it back: attrtag convert EXPORT.json --from labelstudio --schema S "
          "--manifest M --out corrected.csv")
    return 0
