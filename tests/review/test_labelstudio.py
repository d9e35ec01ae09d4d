"""Label Studio: tasks with predictions and a labelling config out; an annotation export back in.

Label Studio's SDK does not install beside attrtag's pins (its opencv-python-headless<4.13 pin
needs numpy<2.3; attrtag pins numpy 2.4.6), so the format is checked field by field here, and
with the SDK's own validator (``LabelInterface``) where it is importable (skipped otherwise).
"""
from __future__ import annotations

import json
import os
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from attrtag.cli import main
from attrtag.data.manifest import read_manifest
from attrtag.errors import ManifestError
from attrtag.review.corrections import read_labelstudio_export, write_manifest
from attrtag.review.labelstudio import image_object_name, labeling_config
from attrtag.review.sources import load_tags
from attrtag.schema import Schema
from tests.helpers import SCHEMA, SCHEMA_YAML
from tests.review.conftest import RULES, make_tags


def convert(tmp_path: Path, tags: Path, *extra: str) -> tuple[int, Path]:
    out = tmp_path / "ls"
    return main(["convert", str(tags), "--to", "labelstudio", "--out", str(out), "--root", str(tags.parent),
                 *extra]), out


def test_labeling_config_has_one_single_choice_control_per_group_and_the_class() -> None:
    view = ET.fromstring(labeling_config(SCHEMA, ["ruby", "sky"]))
    image = view.find("Image")
    assert image is not None and image.get("value") == "$image"
    controls = view.findall("Choices")
    assert [c.get("name") for c in controls] == [*SCHEMA.names, "class"]
    for c in controls:
        assert c.get("toName") == image.get("name") and c.get("choice") == "single-radio"
    assert [x.get("value") for x in controls[1]] == list(SCHEMA["shape"].values)
    assert [x.get("value") for x in controls[-1]] == ["ruby", "sky"]
    assert len(ET.fromstring(labeling_config(SCHEMA)).findall("Choices")) == len(SCHEMA)


def test_a_group_called_image_does_not_clash_with_the_image_object() -> None:
    schema = Schema.from_dict({"image": ["photo", "drawing"], "colour": ["red", "blue"]})
    name = image_object_name(schema)
    assert name not in schema and name != "class"
    view = ET.fromstring(labeling_config(schema))
    assert {c.get("toName") for c in view.findall("Choices")} == {name}


def test_tasks_carry_predictions_least_sure_first(tmp_path: Path, tags_dir: tuple[Path, list[dict]]) -> None:
    tags, recs = tags_dir
    rc, out = convert(tmp_path, tags)
    assert rc == 0
    tasks = json.loads((out / "tasks.json").read_text(encoding="utf-8"))
    tagged = {r["path"]: r for r in recs if "error" not in r}
    assert sorted(t["data"]["path"] for t in tasks) == sorted(tagged)  # failed images left out
    scores = [t["predictions"][0]["score"] for t in tasks]
    assert scores == sorted(scores)
    for t in tasks:
        rec, (pred,) = tagged[t["data"]["path"]], t["predictions"]
        assert pred["score"] == min(rec[f"{g}_prob"] for g in SCHEMA.names)
        chosen = {r["from_name"]: r["value"]["choices"] for r in pred["result"]}
        assert chosen == {**{g: [rec[g]] for g in SCHEMA.names}, **({"class": [rec["class"]]} if rec["class"] != "unknown" else {})}
        assert all(r["type"] == "choices" and r["to_name"] == "image" for r in pred["result"])
        # The image URL is Label Studio's local-files URL, relative to the document root.
        prefix, rel = t["data"]["image"].split("?d=")
        assert prefix == "/data/local-files/"
        assert Path(tmp_path / "img" / urllib.parse.unquote(rel)).is_file()
    config = ET.fromstring((out / "config.xml").read_text(encoding="utf-8"))
    assert [c.get("name") for c in config.findall("Choices")] == [*SCHEMA.names, "class"]


def test_image_urls_are_quoted_under_the_document_root(tmp_path: Path) -> None:
    tags, _ = make_tags(tmp_path / "a b é", 3, classes=False)
    rc, out = convert(tmp_path, tags, "--document-root", str(tmp_path), "--image-url", "http://host/files/")
    assert rc == 0
    urls = [t["data"]["image"] for t in json.loads((out / "tasks.json").read_text(encoding="utf-8"))]
    assert all(u.startswith("http://host/files/a%20b%20%C3%A9/img/img000") for u in urls), urls


def test_the_label_studio_sdk_accepts_config_and_predictions(tmp_path: Path, tags_dir: tuple[Path, list]) -> None:
    interface = pytest.importorskip("label_studio_sdk.label_interface")
    rc, out = convert(tmp_path, tags_dir[0])
    assert rc == 0
    li = interface.LabelInterface((out / "config.xml").read_text(encoding="utf-8"))
    li.validate()
    tasks = json.loads((out / "tasks.json").read_text(encoding="utf-8"))
    for t in tasks:
        assert li.validate_prediction(t["predictions"][0], return_errors=True) == []
    bad = json.loads(json.dumps(tasks[0]["predictions"][0]))
    bad["result"][0]["value"]["choices"] = ["purple"]
    assert li.validate_prediction(bad, return_errors=True)  # the validator is not a rubber stamp


# -- corrections back ------------------------------------------------------------------------------


def annotated_export(tasks: list[dict[str, Any]], labels: list[dict[str, str] | None], **annotation: Any) -> list:
    """What Label Studio's JSON export holds after review: each task with its annotations."""
    out = []
    for i, (t, chosen) in enumerate(zip(tasks, labels)):
        task = {"id": 100 + i, "data": t["data"], "predictions": [], "annotations": []}
        if chosen is not None:
            task["annotations"].append({
                "id": 500 + i, "completed_by": 1, "was_cancelled": False, "ground_truth": False,
                "result": [{"id": f"r{k}", "from_name": g, "to_name": "image", "type": "choices",
                            "origin": "manual", "value": {"choices": [v]}} for k, (g, v) in enumerate(chosen.items())]
                + [{"id": "note", "from_name": "notes", "to_name": "image", "type": "textarea",
                    "value": {"text": ["looks fine"]}}],
                **annotation,
            })
        out.append(task)
    return out


def ls_tasks(tmp_path: Path, n: int = 6) -> tuple[Path, list[dict[str, Any]]]:
    tags, _ = make_tags(tmp_path, n)
    rc, out = convert(tmp_path, tags)
    assert rc == 0
    return tags, json.loads((out / "tasks.json").read_text(encoding="utf-8"))


def test_an_export_becomes_a_manifest_with_empty_cells_where_not_annotated(tmp_path: Path) -> None:
    _, tasks = ls_tasks(tmp_path)
    labels = [{"colour": "blue", "band": "top", "class": "sky"}, {"shape": "s6"}, None,
              {"colour": "red", "shape": "s0", "band": "bottom"}, {}, {"band": "bottom"}]
    export = tmp_path / "export.json"
    data = annotated_export(tasks, labels)
    # A cancelled annotation does not count; a second, later one does.
    data[5]["annotations"].insert(0, {**data[5]["annotations"][0], "was_cancelled": True,
                                      "result": [{"from_name": "band", "to_name": "image", "type": "choices",
                                                  "value": {"choices": ["top"]}}]})
    export.write_text(json.dumps(data, indent=2), encoding="utf-8")
    out = tmp_path / "corrections.csv"
    rc = main(["convert", str(export), "--from", "labelstudio", "--schema", str(write_schema(tmp_path)),
               "--out", str(out), "--root", str(tmp_path)])
    assert rc == 0
    rows = out.read_text(encoding="utf-8").splitlines()
    assert rows[0] == "path,colour,shape,band,class"  # schema order, then the class
    want = [(t["data"]["path"], lab) for t, lab in zip(tasks, labels) if lab is not None]
    assert len(rows) == 1 + len(want)
    for line, (path, lab) in zip(rows[1:], want):
        cells = line.split(",")
        assert cells[0] == str(tmp_path / path)
        assert cells[1:] == [lab.get(c, "") for c in ("colour", "shape", "band", "class")]
    manifest = read_manifest(out, SCHEMA)  # what `attrtag train` reads, as it is
    assert [s.labels for s in manifest.samples][:2] == [(2, -1, 0), (-1, 6, -1)]
    assert manifest.samples[0].extra["class"] == "sky"


def write_schema(folder: Path) -> Path:
    path = folder / "schema.yaml"
    path.write_text(SCHEMA_YAML)
    return path


def test_ground_truth_wins_over_later_annotations(tmp_path: Path) -> None:
    _, tasks = ls_tasks(tmp_path, 2)
    data = annotated_export(tasks[:1], [{"colour": "red"}], ground_truth=True)
    later = annotated_export(tasks[:1], [{"colour": "blue"}])[0]["annotations"][0]
    data[0]["annotations"].append(later)
    export = tmp_path / "export.json"
    export.write_text(json.dumps(data), encoding="utf-8")
    (c,) = read_labelstudio_export(export, SCHEMA, root=tmp_path)
    assert c.labels == {"colour": "red"}


def test_the_newest_annotation_counts_and_skipped_ones_do_not(tmp_path: Path) -> None:
    _, tasks = ls_tasks(tmp_path, 2)
    newer = annotated_export(tasks[:1], [{"colour": "blue"}], created_at="2026-03-02T10:00:00Z")[0]["annotations"]
    older = annotated_export(tasks[:1], [{"colour": "green"}], created_at="2026-03-01T10:00:00Z")[0]["annotations"]
    skipped = annotated_export(tasks[:1], [{"colour": "red"}], created_at="2026-03-03T10:00:00Z",
                               skipped=True)[0]["annotations"]
    data = [{**annotated_export(tasks[:1], [None])[0], "annotations": newer + older + skipped}]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(data), encoding="utf-8")
    (c,) = read_labelstudio_export(export, SCHEMA, root=tmp_path)
    assert c.labels == {"colour": "blue"}


def bad_export(tmp_path: Path, region: dict[str, Any]) -> Path:
    _, tasks = ls_tasks(tmp_path, 3)
    data = annotated_export(tasks, [{"colour": "red"}, {"band": "top"}, {"shape": "s1"}])
    data[1]["annotations"][0]["result"][0] = {"from_name": "band", "to_name": "image", "type": "choices", **region}
    export = tmp_path / "export.json"
    export.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return export


def run_back(capsys: pytest.CaptureFixture[str], tmp_path: Path, export: Path) -> tuple[int, str, Path]:
    out = tmp_path / "corrections.csv"
    rc = main(["convert", str(export), "--from", "labelstudio", "--schema", str(write_schema(tmp_path)),
               "--out", str(out)])
    return rc, capsys.readouterr().err, out


def test_a_choice_outside_the_schema_is_one_line_naming_file_line_and_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = bad_export(tmp_path, {"value": {"choices": ["sideways"]}})
    rc, err, out = run_back(capsys, tmp_path, export)
    line = next(n for n, text in enumerate(export.read_text().splitlines(), 1) if '"id": 101' in text) - 1
    assert rc == 2 and not out.exists()
    assert err.count("\n") == 1
    assert f"export.json:{line} (task 101): 'band' = 'sideways' is not a value of the schema (allowed: top, bottom)" in err


@pytest.mark.parametrize("region, match", [
    ({"from_name": "size", "value": {"choices": ["xl"]}}, "choices control 'size' is not a group of the schema"),
    ({"value": {"choices": ["top", "bottom"]}}, "'band' has 2 choices"),
])
def test_other_bad_choices_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], region: dict[str, Any], match: str
) -> None:
    rc, err, out = run_back(capsys, tmp_path, bad_export(tmp_path, region))
    assert rc == 2 and match in err and err.count("\n") == 1 and not out.exists()


@pytest.mark.parametrize("content, match", [
    ('{"image": "x.jpg", "colour": "red"}', r"export\.json:1: not a Label Studio JSON export"),
    ('[{"id": 7, "image": "x.jpg"}]', r"export\.json:1: not a Label Studio task \(no 'data' object\)"),
    ('[\n{"id": 7, "data": {"image": "x.jpg"}, "annotations": []}\n]', r"export\.json:2 \(task 7\): the task has no data\.path"),
    ('[\n{"id": 7, "data": {"path": "a.jpg"}},\n{"id": 8, "data": ', r"export\.json:3: invalid JSON"),
])
def test_files_that_are_not_exports_are_refused(tmp_path: Path, content: str, match: str) -> None:
    export = tmp_path / "export.json"
    export.write_text(content, encoding="utf-8")
    with pytest.raises(ManifestError, match=match):
        read_labelstudio_export(export, SCHEMA)


def test_an_export_without_annotations_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, tasks = ls_tasks(tmp_path, 2)
    export = tmp_path / "export.json"
    export.write_text(json.dumps(annotated_export(tasks, [None, None])), encoding="utf-8")
    rc, err, out = run_back(capsys, tmp_path, export)
    assert rc == 2 and "export.json: no annotated task" in err and not out.exists()


def test_the_corrections_train_as_they_are(tmp_path: Path, tiny_data: tuple[Path, Path]) -> None:
    """The loop closed: tags -> tasks -> reviewed export -> manifest -> one epoch of training."""
    schema_path, manifest_path = tiny_data
    truth = read_manifest(manifest_path, SCHEMA)
    cwd = os.getcwd()
    os.chdir(manifest_path.parent)  # record paths relative to here, as `attrtag tag img/` would write
    try:
        tags, _ = make_tags(tmp_path, 1)
        meta_tags = load_tags(tags)
        # Records for the dataset's own images (predictions are irrelevant to the loop).
        recs = [{**meta_tags.tagged[0], "path": os.path.relpath(s.path)} for s in truth.samples[:40]]
        from attrtag.tagging import open_output

        ours = tmp_path / "dataset_tags.jsonl"
        with open_output(ours, meta_tags.meta) as w:
            w.write(recs)
        ls = tmp_path / "ls"
        assert main(["convert", str(ours), "--to", "labelstudio", "--out", str(ls)]) == 0
        tasks = json.loads((ls / "tasks.json").read_text(encoding="utf-8"))
        by_path = {os.path.abspath(s.path): s for s in truth.samples}
        # The reviewer fixes colour everywhere, and band on every other image only.
        labels = []
        for i, t in enumerate(tasks):
            s = by_path[os.path.abspath(t["data"]["path"])]
            lab = {"colour": SCHEMA["colour"].values[s.labels[0]]} if s.labels[0] >= 0 else {}
            if i % 2 and s.labels[2] >= 0:
                lab["band"] = SCHEMA["band"].values[s.labels[2]]
            labels.append(lab)
        export = tmp_path / "export.json"
        export.write_text(json.dumps(annotated_export(tasks, labels)), encoding="utf-8")
        corrections = tmp_path / "corrections.csv"
        assert main(["convert", str(export), "--from", "labelstudio", "--schema", str(schema_path),
                     "--out", str(corrections)]) == 0
    finally:
        os.chdir(cwd)
    rc = main(["train", "--schema", str(schema_path), "--manifest", str(corrections), "--out", str(tmp_path / "run"),
               "--backbone", "test_resnet", "--image-size", "32", "--epochs", "1", "--batch-size", "16",
               "--workers", "0", "--device", "cpu"])
    assert rc == 0 and (tmp_path / "run" / "best.pt").is_file()


def test_write_manifest_keeps_the_last_correction_of_a_path(tmp_path: Path) -> None:
    from attrtag.review.corrections import Correction

    out = write_manifest([Correction("/x/a.jpg", {"colour": "red"}, "e:1"), Correction("/x/b.jpg", {}, "e:2"),
                          Correction("/x/a.jpg", {"band": "top"}, "e:3")], SCHEMA, tmp_path / "m.csv")
    assert out.read_text().splitlines() == ["path,colour,shape,band", "/x/a.jpg,,,top", "/x/b.jpg,,,"]


def test_rules_in_the_config_match_the_tags(tmp_path: Path, tags_dir: tuple[Path, list]) -> None:
    assert load_tags(tags_dir[0]).class_names == tuple(RULES["classes"])
