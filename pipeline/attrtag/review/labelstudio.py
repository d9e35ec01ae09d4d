"""Tags as Label Studio tasks with predictions, and the labelling config they need.

One ``Choices`` control per group: single choice for an exclusive group (its values are
mutually exclusive), multiple choice (``choice="multiple"``) for a multi-label group, plus one
for the class when the tags have class rules. Each task carries the model's answer as a
prediction whose ``score`` is how sure the model is of its least sure group or multi-label value
(:mod:`.sureness`), so sorting the data manager by prediction score puts the doubtful images
first. Field by field in ``datasets/REVIEW.md``; corrections come back through
:mod:`.corrections`.
"""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Sequence

from .._files import atomic_dir
from ..schema import Schema
from ..tagging.records import UNKNOWN, TagRecord
from .sources import TagSet, relative_url
from .sureness import group_sureness

#: Label Studio's URL for files it serves from ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``.
LOCAL_FILES_URL = "/data/local-files/?d="
CLASS_CONTROL = "class"
#: ``Choices`` modes: radio buttons for one value, checkboxes for any number of them.
SINGLE, MULTIPLE = "single-radio", "multiple"
TASKS_FILE, CONFIG_FILE = "tasks.json", "config.xml"


def image_object_name(schema: Schema) -> str:
    """The name of the ``Image`` object: ``image``, unless a group is called that."""
    name = "image"
    while name in schema or name == CLASS_CONTROL:
        name += "_"
    return name


def labeling_config(schema: Schema, class_names: Sequence[str] | None = None) -> str:
    """The labelling config XML: the image, then one choice control per group (and class):
    single choice for an exclusive group, multiple choice for a multi-label one.

    Args:
        schema: groups and values, in order.
        class_names: the classes of the rules, or None for no class control.

    Returns:
        The ``<View>`` document, indented.
    """
    image = image_object_name(schema)
    view = ET.Element("View")
    ET.SubElement(view, "Image", name=image, value="$image", zoom="true")
    controls = [(g.name, g.values, MULTIPLE if g.multi else SINGLE) for g in schema]
    if class_names:
        controls.append((CLASS_CONTROL, tuple(class_names), SINGLE))
    for name, values, mode in controls:
        ET.SubElement(view, "Header", value=name)
        choices = ET.SubElement(view, "Choices", name=name, toName=image, choice=mode, showInline="true")
        for v in values:
            ET.SubElement(choices, "Choice", value=v)
    ET.indent(view)
    return ET.tostring(view, encoding="unicode") + "\n"


def task(tags: TagSet, record: TagRecord, image_url: str) -> dict[str, Any]:
    """The Label Studio task of one tagged record, its prediction included.

    Args:
        tags: the tag set.
        record: a tagged record (no ``error``).
        image_url: what Label Studio loads the image from.

    Returns:
        ``{"data": {"image", "path"}, "predictions": [{"model_version", "score", "result"}]}``.
    """
    image = image_object_name(tags.schema)
    layout = tags.meta.layout
    result = []
    for g in tags.schema:
        chosen = list(record[g.name]) if g.multi else [record[g.name]]
        if chosen:  # no value present: nothing checked, as Label Studio itself stores it (no result)
            result.append(_choice(g.name, image, chosen, group_sureness(layout, record, g)))
    if "class" in record and record["class"] != UNKNOWN:  # "unknown" is not a class to choose
        result.append(_choice(CLASS_CONTROL, image, [record["class"]], record["class_prob"]))
    group, score = tags.least_sure(record)
    return {
        "data": {"image": image_url, "path": record["path"], "least_sure": group},
        "predictions": [{
            "model_version": f"{tags.meta.model} {tags.meta.model_sha256[:12]}",
            "score": score,
            "result": result,
        }],
    }


def _choice(name: str, image: str, values: list[str], score: float) -> dict[str, Any]:
    return {"id": name, "from_name": name, "to_name": image, "type": "choices",
            "value": {"choices": values}, "score": score}


def common_root(paths: Sequence[str | os.PathLike[str]]) -> Path:
    """The deepest folder that holds every path (the default local-files document root)."""
    folders = [os.path.dirname(os.path.abspath(p)) for p in paths]
    return Path(os.path.commonpath(folders)) if folders else Path.cwd()


def write_labelstudio(
    tags: TagSet,
    out: str | os.PathLike[str],
    *,
    document_root: str | os.PathLike[str] | None = None,
    url_prefix: str = LOCAL_FILES_URL,
) -> tuple[int, Path]:
    """Write ``out/tasks.json`` and ``out/config.xml`` (replacing ``out`` atomically).

    Failed images are left out. Tasks are in least-sure-first order, so even a tool that ignores
    the score shows the doubtful images first.

    Args:
        tags: the tag set.
        out: the folder to create.
        document_root: the folder image URLs are relative to (Label Studio's
            ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``); default: the deepest folder holding
            every image.
        url_prefix: prepended to each relative image path (default: Label Studio's local files).

    Returns:
        The number of tasks, and the document root used.
    """
    tagged = tags.tagged
    root = Path(document_root) if document_root is not None else common_root([tags.image_path(r) for r in tagged])
    tasks = [task(tags, r, url_prefix + relative_url(tags.image_path(r), root)) for r in tagged]
    tasks.sort(key=lambda t: t["predictions"][0]["score"])
    with atomic_dir(out) as tmp:
        # One task per line: diffable, and greppable by path.
        lines = ",\n".join(json.dumps(t, ensure_ascii=False) for t in tasks)
        (tmp / TASKS_FILE).write_text(f"[\n{lines}\n]\n" if tasks else "[]\n", encoding="utf-8")
        (tmp / CONFIG_FILE).write_text(labeling_config(tags.schema, tags.class_names), encoding="utf-8")
    return len(tasks), root
