"""Tags as a FiftyOne dataset folder: a ``Classification`` field per exclusive group, a
``Classifications`` field per multi-label group, with confidences.

The layout is FiftyOne's ``FiftyOneImageLabelsDataset`` (ETA image labels), chosen because it is
the documented import format that holds several classification fields per image: each image
attribute becomes its own ``Classification`` field named after it (``multilabel=False``, the
importer's default). ``FiftyOneImageClassificationDataset`` holds one label field per dataset,
and the ``FiftyOneDataset`` format is a database dump (schema documents, object ids, migrations)
that is not meant to be written by other programs. Field by field in ``datasets/REVIEW.md``.

A multi-label group is written as FiftyOne's own exporter writes a ``Classifications`` field
(``fiftyone.utils.eta.to_image_labels``): one attribute per value present, each named after the
group. FiftyOne's importer gathers same-named attributes into ``Classifications`` only with
``multilabel=True``, which would make every exclusive group a one-element ``Classifications``
too, and a plain import keeps one value of each (the last) without a word. Such a folder is
imported in two passes (:func:`import_code`, printed by ``attrtag convert``)::

    import fiftyone as fo
    ds = fo.Dataset.from_dir("DIR", dataset_type=fo.types.FiftyOneImageLabelsDataset,
                             labels_dict={"colour": "colour", "class": "class"})
    ds.merge_dir("DIR", dataset_type=fo.types.FiftyOneImageLabelsDataset,
                 labels_dict={"marks": "marks"}, multilabel=True)
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from .._files import atomic_dir
from ..schema import Schema
from ..tagging.records import TagRecord
from .sources import TagSet

_logger = logging.getLogger(__name__)

#: FiftyOne's own sample fields: a group of that name would clash with them on import.
FIFTYONE_FIELDS = frozenset({"id", "filepath", "tags", "metadata", "media_type", "created_at", "last_modified_at"})
_INDEX_TYPE = "eta.core.datasets.LabeledImageDataset"
_ATTRIBUTE_TYPE = "eta.core.data.CategoricalAttribute"
_DATASET_TYPE = "fo.types.FiftyOneImageLabelsDataset"


def image_labels(tags: TagSet, record: TagRecord) -> dict[str, Any]:
    """The ETA ``ImageLabels`` of one tagged record: a categorical attribute per exclusive group
    (and the class), one per value present of a multi-label group.

    Absent values are left out, as FiftyOne lists only the labels present in ``Classifications``
    (a count of ``marks.classifications.label`` counts images with the value); their
    probabilities stay in the tag output.

    Args:
        tags: the tag set (schema order).
        record: a tagged record (no ``error``).

    Returns:
        ``{"attrs": {"attrs": [{"type", "name", "value", "confidence"}, ...]}}``.
    """
    attrs = []
    for g in tags.schema:
        if g.multi:
            probs = record[f"{g.name}_probs"]
            attrs += [_attribute(g.name, v, probs.get(v)) for v in record[g.name]]
        else:
            attrs.append(_attribute(g.name, record[g.name], record[f"{g.name}_prob"]))
    if "class" in record:
        attrs.append(_attribute("class", record["class"], record["class_prob"]))
    return {"attrs": {"attrs": attrs}}


def _attribute(name: str, value: str, confidence: float | None) -> dict[str, Any]:
    # No confidence where top_k dropped a present value's probability: absent, not a made-up number.
    attr = {"type": _ATTRIBUTE_TYPE, "name": name, "value": value}
    return attr if confidence is None else {**attr, "confidence": confidence}


def import_options(schema: Schema, *, with_class: bool) -> list[dict[str, Any]]:
    """The keyword arguments of each FiftyOne import pass of the folder: ``from_dir``, then ``merge_dir``.

    One plain pass (``[{}]``) without multi-label groups. With them: the exclusive groups (and the
    class) by name, then the multi-label groups with ``multilabel=True`` (see the module docstring).
    """
    multi = [g.name for g in schema.multi]
    if not multi:
        return [{}]
    single = [g.name for g in schema if not g.multi] + (["class"] if with_class else [])
    passes: list[dict[str, Any]] = [{"labels_dict": _fields(single)}] if single else []
    return passes + [{"labels_dict": _fields(multi), "multilabel": True}]


def _fields(names: list[str]) -> dict[str, str]:
    # labels_dict ignores the importer's prefix: a name FiftyOne keeps for itself gets it here.
    return {n: f"attrtag_{n}" if n in FIFTYONE_FIELDS else n for n in names}


def import_code(folder: str | os.PathLike[str], schema: Schema, *, with_class: bool) -> list[str]:
    """The Python lines that import the folder (``fo`` is ``fiftyone``): one per pass."""
    calls = []
    for i, options in enumerate(import_options(schema, with_class=with_class)):
        args = ", ".join([json.dumps(os.fspath(folder), ensure_ascii=False), f"dataset_type={_DATASET_TYPE}"]
                         + [f"{k}={options[k]!r}" for k in options])
        calls.append(f"fo.Dataset.from_dir({args})" if i == 0 else f"ds.merge_dir({args})")
    return calls if len(calls) == 1 else [f"ds = {calls[0]}", *calls[1:]]


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
        fix = ("the import code names their fields attrtag_<group>" if tags.schema.multi
               else "import with prefix='attrtag_'")
        _logger.warning("group(s) %s clash with FiftyOne's own sample fields; %s", ", ".join(clashes), fix)
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
