"""A tag output as one self-contained HTML page: histograms, a filterable grid, the failed files.

The page is a Jinja2 template (``templates/report.html.j2``) with the data as one JSON blob;
plain JavaScript in the page filters, sorts and paginates it, so nothing is fetched (no server,
no CDN) and tens of thousands of images stay usable: only one page of cards is in the DOM. The
blob's layout is specified in ``datasets/REVIEW.md``; sizes per 10,000 images are measured by
``scripts/bench_report.py`` (figures in ``scripts/README.md``).

Thumbnails are embedded (default) as small JPEGs in ``data:`` URLs, made by the project's one
decode pipeline (:func:`attrtag.data.batches.decode_batches`, ``border`` crop: the whole image,
padded to a square), so the file can be mailed or opened anywhere; or linked (``thumbnails=
"link"``): the page points at the original files relative to itself, no decoding, a far smaller
file, but it works only beside the images.
"""
from __future__ import annotations

import base64
import datetime
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .._files import write_text
from ..data.batches import decode_batches
from ..data.preprocess import Preprocessing
from ..errors import AttrtagError, OutputError
from ..tagging.records import UNKNOWN, TagRecord
from .sources import TagSet, relative_url

_logger = logging.getLogger(__name__)

THUMBNAIL_MODES = ("embed", "link")
DEFAULT_THUMB_SIZE = 128  # px, square: 3-4 KB as JPEG, sharp enough to check a colour or a pattern
DEFAULT_THRESHOLD = 0.5  # "uncertain" when the tags carry no thresholds of their own
JPEG_QUALITY = 70
_TEMPLATE = "report.html.j2"


@dataclass(frozen=True)
class ReportSummary:
    """What :func:`write_report` wrote.

    Attributes:
        path: the HTML file.
        images: records in the report (every record of the tags).
        failed: records of images that could not be tagged.
        no_thumbnail: tagged images whose thumbnail could not be made (moved or unreadable since).
        bytes: size of the HTML file.
    """

    path: Path
    images: int
    failed: int
    no_thumbnail: int
    bytes: int


def report_thresholds(tags: TagSet, given: Mapping[str, float] | None = None) -> dict[str, float]:
    """Per exclusive group, the probability below which the report calls a group uncertain.

    ``given`` (``--threshold``) wins; else the thresholds the tags were written with; else
    :data:`DEFAULT_THRESHOLD` for every exclusive group. Groups left out are never uncertain;
    multi-label groups never are (as in the records, their values are decided at thresholds).
    """
    own = dict(tags.meta.layout.thresholds)
    base = given if given else own
    default = DEFAULT_THRESHOLD if not base else None
    names = [g.name for g in tags.schema if not g.multi]
    return {g: base.get(g, default) for g in names if g in base or default is not None}  # type: ignore[misc]


def thumbnail_preprocessing(size: int) -> Preprocessing:
    """Square thumbnails that show the whole image: ``border`` mode pads with a light grey."""
    return Preprocessing((size, size), mean=(0.94, 0.94, 0.94), std=(1.0, 1.0, 1.0),
                         interpolation="bilinear", crop_mode="border")


def embedded_thumbnails(
    paths: Sequence[str | os.PathLike[str]], *, size: int, workers: int, progress: Callable[[int], None] | None = None
) -> list[str | None]:
    """``data:image/jpeg;base64,...`` of each image, None where it cannot be decoded (any more).

    Args:
        paths: image files.
        size: thumbnail side in pixels.
        workers: decode threads (0: in this thread).
        progress: called with the number of images done after each batch.

    Returns:
        One entry per path, in order.
    """
    from PIL import Image

    out: list[str | None] = []
    prep = thumbnail_preprocessing(size)
    for batch in decode_batches([os.fspath(p) for p in paths], prep, batch_size=64, workers=workers,
                                normalize_in_workers=False):
        for d in batch:
            if d.pixels is None:
                _logger.debug("no thumbnail for %s: %s", d.path, d.message)
                out.append(None)
                continue
            buf = io.BytesIO()
            Image.fromarray(d.pixels).save(buf, "JPEG", quality=JPEG_QUALITY)
            out.append("data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"))
        if progress is not None:
            progress(len(out))
    return out


def report_data(tags: TagSet, thumbnails: Sequence[str | None], thresholds: Mapping[str, float]) -> dict[str, Any]:
    """The JSON blob the page renders (layout in ``datasets/REVIEW.md``).

    Items are arrays, not objects, to keep the file small: ``[path, thumbnail, value indices,
    probabilities, class index, class probability, error index, message]``; a tagged item has
    ``error index`` -1, a failed one has null values and probabilities. Per group, an exclusive
    group holds its top value's index and probability, a multi-label group the list of the
    indices present and every value's probability (null where ``top_k`` left it out).
    """
    schema = tags.schema
    classes = [*tags.class_names, UNKNOWN] if tags.class_names is not None else None
    errors = sorted({r["error"] for r in tags.records if "error" in r})
    thumbs = iter(thumbnails)
    items = []
    for r in tags.records:
        if "error" in r:
            items.append([r["path"], None, None, None, -1, None, errors.index(r["error"]), r.get("message", "")])
            continue
        values, probs = _group_fields(tags, r)
        cls = classes.index(r["class"]) if classes is not None and "class" in r else -1
        items.append([r["path"], next(thumbs), values, probs, cls, r.get("class_prob"), -1, ""])
    return {
        "source": tags.source.name,
        "model": tags.meta.model,
        "created": datetime.datetime.now().replace(microsecond=0).isoformat(sep=" "),
        "groups": [_group_entry(tags, g.name) for g in schema],
        "thresholds": [thresholds.get(g) for g in schema.names],
        "classes": classes,
        "errors": errors,
        "items": items,
    }


def _group_entry(tags: TagSet, name: str) -> dict[str, Any]:
    """A group of the blob: name, values, kind, and a multi-label group's value thresholds."""
    g = tags.schema[name]
    entry: dict[str, Any] = {"name": g.name, "values": list(g.values), "kind": g.kind}
    if g.multi:  # the page needs them for "least sure first" (see .sureness)
        entry["value_thresholds"] = [tags.meta.layout.decision_threshold(g.name, i) for i in range(len(g))]
    return entry


def _group_fields(tags: TagSet, record: TagRecord) -> tuple[list[Any], list[Any]]:
    """An item's value indices and probabilities, group by group (see :func:`report_data`)."""
    values: list[Any] = []
    probs: list[Any] = []
    try:
        for g in tags.schema:
            if g.multi:
                values.append(sorted(g.index(v) for v in record[g.name]))
                probs.append([record[f"{g.name}_probs"].get(v) for v in g.values])
            else:
                values.append(g.index(record[g.name]))
                probs.append(record[f"{g.name}_prob"])
    except KeyError as err:
        raise OutputError(
            f"{tags.source}: record '{record['path']}' has {err} where its header's schema has no such value; "
            "the file was edited or is corrupt"
        ) from None
    return values, probs


def render_report(data: Mapping[str, Any], *, title: str, template: str = _TEMPLATE) -> str:
    """The HTML page for ``data`` (see :func:`report_data`; another ``template`` of ``templates/``
    renders other data, e.g. an audit's suspects)."""
    try:
        import jinja2
    except ImportError:
        raise AttrtagError("the report needs Jinja2: pip install 'jinja2==3.1.6'") from None
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    # tojson escapes <, >, & and ': the blob cannot close its <script> element, whatever a path holds.
    return env.get_template(template).render(title=title, data=data)


def write_report(
    tags: TagSet,
    out: str | os.PathLike[str],
    *,
    thumbnails: str = "embed",
    thumb_size: int = DEFAULT_THUMB_SIZE,
    thresholds: Mapping[str, float] | None = None,
    workers: int = 2,
    progress: Callable[[int], None] | None = None,
) -> ReportSummary:
    """Write the HTML report of ``tags`` to ``out`` (atomically).

    Args:
        tags: the tag set.
        out: the ``.html`` file.
        thumbnails: ``embed`` (self-contained) or ``link`` (relative links to the images).
        thumb_size: embedded thumbnail side in pixels.
        thresholds: group -> probability below which the group is "uncertain" (default: see
            :func:`report_thresholds`).
        workers: thumbnail decode threads.
        progress: called with the number of thumbnails made so far.

    Returns:
        What was written.
    """
    if thumbnails not in THUMBNAIL_MODES:
        raise AttrtagError(f"`thumbnails={thumbnails}`: not one of {', '.join(THUMBNAIL_MODES)}")
    if not 16 <= thumb_size <= 512:
        raise AttrtagError(f"`thumb_size={thumb_size}`: choose between 16 and 512 pixels")
    out = Path(out)
    paths = [tags.image_path(r) for r in tags.tagged]
    # The data first: a bad record fails before minutes of thumbnail decoding, not after.
    data = report_data(tags, [None] * len(paths), report_thresholds(tags, thresholds))
    if thumbnails == "embed":
        thumbs: list[str | None] = embedded_thumbnails(paths, size=thumb_size, workers=workers, progress=progress)
    else:
        thumbs = [relative_url(p, out.parent) for p in paths]  # the page must stay beside the images
    for item, thumb in zip((it for it in data["items"] if it[6] < 0), thumbs):
        item[1] = thumb
    html = render_report(data, title=f"attrtag report: {tags.source.name}")
    write_text(out, html)
    return ReportSummary(out, len(tags.records), len(tags.records) - len(paths), sum(t is None for t in thumbs),
                         out.stat().st_size)
