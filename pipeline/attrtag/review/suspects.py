"""An audit's suspect labels for review: a Label Studio project and the data of an HTML page.

The audit file (``datasets/AUDIT.md``) names, per image, the labels it doubts. Label Studio gets
one task per image, most suspect first: the image, the doubts in words (given value, suggested
value, probabilities) and one control per group with a suspect, **prefilled with the label the
manifest gives**, so a reviewer changes what is wrong and submits the rest as it is (prefilling
the suggestion instead would let a tired reviewer accept the model's word for it). The export
comes back through :mod:`.corrections` (``attrtag convert --from labelstudio``) as a manifest of
the reviewed groups, whose cells replace the manifest's (:func:`apply_corrections`).

A multi-label group is reviewed whole, as every Label Studio review of this project is
(``datasets/REVIEW.md``): its checkboxes start with the values the manifest gives present, and
what is unchecked at submission is absent.
"""
from __future__ import annotations

import csv
import io
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

from .._files import atomic_dir, write_text
from ..auditing.output import AuditFile
from ..data.manifest import Sample, file_identity, read_manifest
from ..data.multilabel import PRESENT
from ..errors import AttrtagError
from ..schema import Schema
from .corrections import Correction
from .labelstudio import CONFIG_FILE, SINGLE, MULTIPLE, TASKS_FILE, common_root, image_object_name
from .sources import relative_url

#: The Label Studio ``Text`` object that shows a task's doubts.
DOUBTS = "doubts"


def by_image(audit: AuditFile) -> dict[str, list[dict[str, Any]]]:
    """The rows of each image, most suspect first; images in the order of their most suspect row."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in sorted(audit.rows, key=lambda r: -float(r["score"])):
        out[row["path"]].append(row)
    return dict(out)


def describe(row: Mapping[str, Any]) -> str:
    """One doubt in words: ``colour: given green (0.09), suggested red (0.90)``."""
    what = row["group"] if row.get("value") is None else f"{row['group']}.{row['value']}"
    return (f"{what}: given {row['label']} ({float(row['p_label']):.2f}), suggested {row['suggested']} "
            f"({float(row['p_suggested']):.2f}), score {float(row['score']):.2f}")


def given_labels(audit: AuditFile) -> dict[str, Sample]:
    """The audited manifest's samples by path, or {} when it cannot be read any more (moved)."""
    source = audit.meta.get("manifest")
    if not source or not Path(source).is_file():
        return {}
    try:
        return {s.path: s for s in read_manifest(source, audit.schema, check_files=False).samples}
    except AttrtagError:
        return {}


def suspect_task(schema: Schema, path: str, rows: Sequence[Mapping[str, Any]], sample: Sample | None,
                 image_url: str) -> dict[str, Any]:
    """The Label Studio task of one image's suspect labels (prefilled with the given labels)."""
    image = image_object_name(schema)
    result = []
    for name in dict.fromkeys(r["group"] for r in rows):  # the groups in doubt, most suspect first
        chosen = _given(schema, name, [r for r in rows if r["group"] == name], sample)
        if chosen:
            result.append({"id": name, "from_name": name, "to_name": image, "type": "choices",
                           "value": {"choices": chosen}})
    top = max(float(r["score"]) for r in rows)
    return {
        "data": {"image": image_url, "path": path, DOUBTS: "\n".join(describe(r) for r in rows),
                 "groups": ", ".join(dict.fromkeys(r["group"] for r in rows)), "suspect_score": top},
        # Label Studio sorts by prediction score; ascending puts the most suspect first, as for tags.
        "predictions": [{"model_version": "attrtag audit (given labels)", "score": round(1.0 - top, 6),
                         "result": result}],
    }


def _given(schema: Schema, name: str, rows: Sequence[Mapping[str, Any]], sample: Sample | None) -> list[str]:
    """The values the manifest gives the image in group ``name`` (multi-label: those present)."""
    g = schema[name]
    if not g.multi:
        return [rows[0]["label"]]
    if sample is not None and name in sample.multi:
        return [v for v, x in zip(g.values, sample.multi[name]) if x == PRESENT]
    return [r["value"] for r in rows if r["label"] == "present"]  # the manifest moved: what the audit says


def suspects_config(schema: Schema, groups: Sequence[str]) -> str:
    """The labelling config: the image, its doubts as text, one choices control per group in doubt."""
    import xml.etree.ElementTree as ET

    image = image_object_name(schema)
    view = ET.Element("View")
    ET.SubElement(view, "Image", name=image, value="$image", zoom="true")
    ET.SubElement(view, "Text", name=DOUBTS, value=f"${DOUBTS}")
    for g in schema:
        if g.name in groups:
            ET.SubElement(view, "Header", value=g.name)
            choices = ET.SubElement(view, "Choices", name=g.name, toName=image,
                                    choice=MULTIPLE if g.multi else SINGLE, showInline="true")
            for v in g.values:
                ET.SubElement(choices, "Choice", value=v)
    ET.indent(view)
    return ET.tostring(view, encoding="unicode") + "\n"


def write_suspects_labelstudio(audit: AuditFile, out: str | os.PathLike[str], *,
                               document_root: str | os.PathLike[str] | None = None,
                               url_prefix: str) -> tuple[int, Path]:
    """Write ``out/tasks.json`` (one task per image, most suspect first) and ``out/config.xml``.

    Returns:
        The number of tasks, and the document root image URLs are relative to.
    """
    schema = audit.schema
    images = by_image(audit)
    root = Path(document_root) if document_root is not None else common_root(list(images))
    samples = given_labels(audit)
    tasks = [suspect_task(schema, p, rows, samples.get(p), url_prefix + relative_url(p, root))
             for p, rows in images.items()]
    groups = sorted({r["group"] for r in audit.rows})
    with atomic_dir(out) as tmp:
        lines = ",\n".join(json.dumps(t, ensure_ascii=False) for t in tasks)
        (tmp / TASKS_FILE).write_text(f"[\n{lines}\n]\n" if tasks else "[]\n", encoding="utf-8")
        (tmp / CONFIG_FILE).write_text(suspects_config(schema, groups), encoding="utf-8")
    return len(tasks), root


def reviewed_groups(export: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
                    ) -> dict[str, set[str] | None]:
    """Per image of a Label Studio export (read by :mod:`.corrections` first), the groups its task
    put in doubt (``data.groups``); None for a task made from tags, which shows every group."""
    base = Path(root) if root is not None else Path.cwd()
    tasks = json.loads(Path(export).read_text(encoding="utf-8"))
    return {os.path.abspath(base / t["data"]["path"]):
            ({g.strip() for g in str(t["data"]["groups"]).split(",")} if "groups" in t["data"] else None)
            for t in tasks if isinstance(t, dict) and isinstance(t.get("data"), dict) and t["data"].get("path")}


def apply_corrections(manifest: str | os.PathLike[str], schema: Schema, corrections: Sequence[Correction],
                      out: str | os.PathLike[str], reviewed: Mapping[str, set[str] | None] | None = None
                      ) -> tuple[int, int]:
    """Write ``manifest`` (a CSV) again with the reviewed cells replaced by the corrections' cells.

    Only the groups a task showed count (``reviewed``, see :func:`reviewed_groups`): the
    corrections say ``[]`` for every multi-label group of an annotated task, shown or not, and a
    group the reviewer never saw must keep the manifest's label. An empty cell keeps it too.

    Returns:
        Rows changed, and corrections whose image is not in the manifest.
    """
    manifest = Path(manifest)
    if manifest.suffix.lower() != ".csv":
        raise AttrtagError(f"`manifest={manifest}`: corrections are applied to a CSV manifest")
    read_manifest(manifest, schema, check_files=False)  # a bad manifest is refused before anything is written
    base, there = manifest.resolve().parent, Path(out).resolve().parent
    # By the file itself: the export may reach an image through another folder (a link) than the manifest does.
    fixes = {file_identity(c.path): c.labels for c in corrections}
    shown_in = {file_identity(p): groups for p, groups in (reviewed or {}).items()}
    with open(manifest, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header, rows = list(reader.fieldnames or ()), list(reader)
    changed, seen = 0, set()
    for row in rows:
        full = os.path.abspath(base / row["path"].strip())
        image = file_identity(full)
        shown = shown_in.get(image)
        cells = {g: v for g, v in fixes.get(image, {}).items() if v.strip() and g in header
                 and (shown is None or g in shown) and not _same_cell(row[g], v)}
        seen.add(image)
        changed += bool(cells)
        row.update(cells)
        if there != base and not os.path.isabs(row["path"].strip()):
            row["path"] = os.path.relpath(full, there)  # still the same image, read from `out`'s folder
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_text(out, buf.getvalue())
    return changed, sum(p not in seen for p in fixes)


def _same_cell(given: str, corrected: str) -> bool:
    """Whether two manifest cells say the same: a multi-label cell's values in another order do."""
    def parts(cell: str) -> list[str]:
        return sorted(p.strip() for p in cell.strip().split("|"))
    return given.strip() == corrected.strip() or ("|" in given + corrected and parts(given) == parts(corrected))


def suspects_report_data(audit: AuditFile, thumbnails: Mapping[str, str | None]) -> dict[str, Any]:
    """The JSON blob of the suspects page: the summary per group, each image's thumbnail once
    (``thumbs``: an image has a row per checked label, 10 in the dogfood's audit), and one item
    per row, most suspect first: ``[path, thumbnail (index into thumbs), group, value, label,
    suggested, score, p_label, p_suggested, flagged, rank]`` (``thumbnails``: path -> URL)."""
    import datetime

    index = {p: i for i, p in enumerate(thumbnails)}
    items = [[r["path"], index[r["path"]], r["group"], r.get("value"), r["label"], r["suggested"], float(r["score"]),
              float(r["p_label"]), float(r["p_suggested"]), bool(r.get("flagged", True)), r.get("rank")]
             for r in audit.rows]
    return {"source": audit.path.name, "method": audit.meta.get("method"), "groups": audit.meta.get("groups", []),
            "rows": "every checked label" if audit.meta.get("rows") == "all" else "suspects only",
            "created": datetime.datetime.now().replace(microsecond=0).isoformat(sep=" "),
            "thumbs": list(thumbnails.values()), "items": items}


def write_suspects_report(audit: AuditFile, out: str | os.PathLike[str], *, thumbnails: str = "embed",
                          thumb_size: int = 128, workers: int = 2, progress: Any = None) -> tuple[int, int]:
    """Write the HTML page of an audit's rows (thumbnail, given vs suggested, filter by group).

    Returns:
        The rows shown, and those without a thumbnail.
    """
    from .report import THUMBNAIL_MODES, embedded_thumbnails, render_report

    if thumbnails not in THUMBNAIL_MODES:
        raise AttrtagError(f"`thumbnails={thumbnails}`: not one of {', '.join(THUMBNAIL_MODES)}")
    if not 16 <= thumb_size <= 512:
        raise AttrtagError(f"`thumb_size={thumb_size}`: choose between 16 and 512 pixels")
    out = Path(out)
    paths = list(dict.fromkeys(r["path"] for r in audit.rows))  # one thumbnail per image
    if thumbnails == "embed":
        made = embedded_thumbnails(paths, size=thumb_size, workers=workers, progress=progress)
    else:
        made = [relative_url(p, out.parent) for p in paths]
    data = suspects_report_data(audit, dict(zip(paths, made)))
    write_text(out, render_report(data, title=f"attrtag audit: {audit.path.name}", template="suspects.html.j2"))
    return len(audit.rows), sum(t is None for t in made)
