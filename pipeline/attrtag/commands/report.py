"""``attrtag report TAGS --out report.html``: one self-contained page to look at the tags.

Parse and print only; the page is made by :mod:`attrtag.review.report`.
"""
from __future__ import annotations

import argparse
from typing import Any

_DESCRIPTION = """\
Write one HTML file that shows a tag output: per group a histogram of the top values (of a
multi-label group: how often each value is present) and of the confidence, a grid of the images
with their values and confidences (least sure first), filters by group, value (present, for a
multi-label group), class, failure reason and "uncertain", and the failed files with reasons.
No server, nothing fetched: open it in any browser, offline.

Thumbnails are embedded by default (small JPEGs: the file is self-contained, about 34 MB per
10,000 images at 128 px); --thumbnails link points at the original images relative to the page
instead (about 2.4 MB per 10,000 images, no decoding, but the page must stay beside the images).
"Uncertain": an exclusive group whose top probability is below its threshold (--threshold, else
the thresholds the tags were written with, else 0.5).
"""


def register(sub: Any) -> None:
    """Add the ``report`` subcommand to ``sub`` (an argparse subparsers object)."""
    p = sub.add_parser("report", help="one self-contained HTML page to look at a tag output",
                       description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tags", metavar="TAGS", help="output of 'attrtag tag' (.jsonl/.csv with its .meta.json, .parquet), "
                   "or of 'attrtag audit' (its suspects: thumbnail, given vs suggested value, filter by group)")
    p.add_argument("--out", required=True, metavar="FILE", help="the HTML file to write")
    p.add_argument("--root", metavar="DIR", help="folder relative image paths are relative to (default: here)")
    p.add_argument("--thumbnails", default="embed", metavar="MODE", help="embed (default) or link")
    p.add_argument("--thumb-size", type=int, default=128, metavar="PX", help="embedded thumbnail side (default: 128)")
    p.add_argument("--threshold", action="append", default=[], metavar="[GROUP=]P",
                   help="'uncertain' below P (all groups) or GROUP=P (one group); repeatable")
    p.add_argument("--workers", type=int, default=None, help="thumbnail decode threads (default: the usable CPUs, 1 to 8)")
    p.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress (default: a bar on a terminal, otherwise a line every 30 s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the report; returns the exit status."""
    from .. import api
    from ..auditing.output import is_audit
    from ._progress import progress_to
    from .tag import parse_thresholds

    if is_audit(args.tags):
        return _suspects(args)
    with progress_to("thumbnails", disable=args.no_progress) as progress:
        summary = api.report(args.tags, args.out, root=args.root, thumbnails=args.thumbnails,
                             thumb_size=args.thumb_size, thresholds=parse_thresholds(args.threshold) or None,
                             workers=args.workers, overwrite=args.overwrite, progress=progress)
    missing = f", {summary.no_thumbnail} without a thumbnail (moved or unreadable)" if summary.no_thumbnail else ""
    print(f"report of {summary.images} images ({summary.failed} failed{missing}), "
          f"{summary.bytes / 1e6:.1f} MB -> {args.out}")
    return 0


def _suspects(args: argparse.Namespace) -> int:
    """The page of an audit file's rows."""
    from .. import api
    from ..errors import AttrtagError
    from ._progress import progress_to

    if args.threshold or args.root:
        raise AttrtagError(f"{args.tags} is an audit file: --threshold and --root are for tag outputs")
    with progress_to("thumbnails", disable=args.no_progress) as progress:
        rows, missing = api.report_suspects(args.tags, args.out, thumbnails=args.thumbnails,
                                            thumb_size=args.thumb_size, workers=args.workers,
                                            overwrite=args.overwrite, progress=progress)
    note = f", {missing} image(s) without a thumbnail (moved or unreadable)" if missing else ""
    print(f"report of {rows} audited label(s){note} -> {args.out}")
    return 0
