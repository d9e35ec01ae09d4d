"""Tags as a FiftyOne dataset folder: one ``Classification`` field per group, with confidence.

The layout is FiftyOne's ``FiftyOneImageLabelsDataset`` (ETA image labels), chosen because it is
the documented import format that holds several classification fields per image: each image
attribute becomes its own ``Classification`` field named after it (``multilabel=False``, the
importer's default). ``FiftyOneImageClassificationDataset`` holds one label field per dataset,
and the ``FiftyOneDataset`` format is a database dump (schema documents, object ids, migrations)
that is not meant to be written by other programs. Field by field in ``datasets/REVIEW.md``.

    import fiftyone as fo
    ds = fo.Dataset.from_dir("DIR", dataset_type=fo.types.FiftyOneImageLabelsDataset)
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from .._files import atomic_dir
from ..tagging.records import TagRecord
from .sources import TagSet

_logger = logging.getLogger(__name__)

#: FiftyOne's own sample fields: a group of that name would clash with them on import.
FIFTYONE_FIELDS = frozenset({"id", "filepath", "tags", "metadata", "media_type", "created_at", "last_modified_at"})
_INDEX_TYPE = "eta.core.datasets.LabeledImageDataset"
_ATTRIBUTE_TYPE = "eta.core.data.CategoricalAttribute"


def image_labels(tags: TagSet, record: TagRecord) -> dict[str, Any]:
    """The ETA ``ImageLabels`` of one tagged record: a categorical attribute per group (and class).

    Args:
        tags: the tag set (schema order).
        record: a tagged record (no ``error``).

    Returns:
        ``{"attrs": {"attrs": [{"type", "name", "value", "confidence"}, ...]}}``.
    """
    attrs = [_attribute(g, record[g], record[f"{g}_prob"]) for g in tags.schema.names]
    if "class" in record:
        attrs.append(_attribute("class", record["class"], record["class_prob"]))
    return {"attrs": {"attrs": attrs}}


def _attribute(name: str, value: str, confidence: float) -> dict[str, Any]:
    return {"type": _ATTRIBUTE_TYPE, "name": name, "value": value, "confidence": confidence}


def write_fiftyone(tags: TagSet, out: str | os.PathLike[str]) -> int:
    """Write ``out/manifest.json`` and ``out/labels/NNNNNN.json`` (replacing ``out`` atomically).

    Images are not copied: the index points at each image's absolute path. Failed images are
    left out (there is no image to look at).

    Args:
        tags: the tag set.
        out: the dataset folder to create.

    Returns:
        The number of samples written.
    """
    clashes = [g for g in (*tags.schema.names, "class") if g in FIFTYONE_FIELDS]
    if clashes:
        _logger.warning(
            "group(s) %s clash with FiftyOne's own sample fields; import with prefix='attrtag_'", ", ".join(clashes)
        )
    tagged = tags.tagged
    index = []
    with atomic_dir(out) as tmp:
        (tmp / "labels").mkdir()
        for i, record in enumerate(tagged):
            name = f"labels/{i:06d}.json"
            (tmp / name).write_text(json.dumps(image_labels(tags, record), ensure_ascii=False), encoding="utf-8")
            index.append({"data": os.path.abspath(tags.image_path(record)), "labels": name})
        manifest = {
            "type": _INDEX_TYPE,
            "description": f"attrtag tags from {Path(tags.source).name} (model {tags.meta.model})",
            "index": index,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
    return len(tagged)
