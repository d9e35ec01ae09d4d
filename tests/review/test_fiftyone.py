"""FiftyOne: a FiftyOneImageLabelsDataset folder with one Classification field per exclusive group
and one Classifications field per multi-label group.

FiftyOne installs here (in its own environment: its opencv-python-headless<5 pin clashes with
attrtag's environment), but its database cannot: fiftyone-db downloads MongoDB when installed,
and this machine reaches package registries only. So the format is checked field by field,
and with FiftyOne's own importer class (which parses the folder without the database) where
``fiftyone`` is importable; ``fo.Dataset.from_dir`` itself is not run.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from attrtag.cli import main
from attrtag.review.fiftyone import import_code, import_options
from attrtag.schema import Schema
from tests.helpers import MARKS, MULTI_SCHEMA, SCHEMA
from tests.review.conftest import make_tags


def convert(tmp_path: Path, tags: Path) -> tuple[int, Path]:
    out = tmp_path / "fo"
    return main(["convert", str(tags), "--to", "fiftyone", "--out", str(out), "--root", str(tags.parent)]), out


def test_the_folder_holds_one_labels_file_per_tagged_image(tmp_path: Path, tags_dir: tuple[Path, list]) -> None:
    tags, recs = tags_dir
    rc, out = convert(tmp_path, tags)
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["type"] == "eta.core.datasets.LabeledImageDataset"
    tagged = [r for r in recs if "error" not in r]
    assert len(manifest["index"]) == len(tagged)  # failed images left out
    for entry, rec in zip(manifest["index"], tagged):
        assert entry["data"] == str(tmp_path / rec["path"]) and Path(entry["data"]).is_file()
        labels = json.loads((out / entry["labels"]).read_text(encoding="utf-8"))
        attrs = labels["attrs"]["attrs"]
        assert [a["name"] for a in attrs] == [*SCHEMA.names, "class"]
        assert all(a["type"] == "eta.core.data.CategoricalAttribute" for a in attrs)
        for a in attrs:
            field = "class" if a["name"] == "class" else a["name"]
            assert (a["value"], a["confidence"]) == (rec[field], rec[f"{field}_prob"])


def test_without_rules_there_is_no_class_field(tmp_path: Path) -> None:
    tags, _ = make_tags(tmp_path, 3, classes=False)
    rc, out = convert(tmp_path, tags)
    first = json.loads((out / "labels" / "000000.json").read_text(encoding="utf-8"))
    assert rc == 0 and [a["name"] for a in first["attrs"]["attrs"]] == list(SCHEMA.names)


def test_fiftyones_importer_reads_one_classification_per_group(tmp_path: Path, tags_dir: tuple[Path, list]) -> None:
    foud = pytest.importorskip("fiftyone.utils.data")
    fol = pytest.importorskip("fiftyone.core.labels")
    tags, recs = tags_dir
    rc, out = convert(tmp_path, tags)
    assert rc == 0
    tagged = {str(tmp_path / r["path"]): r for r in recs if "error" not in r}
    importer = foud.FiftyOneImageLabelsDatasetImporter(str(out))  # what from_dir uses for this type
    seen = 0
    with importer:
        for image_path, _, labels in importer:
            rec = tagged[image_path]
            assert set(labels) == {*SCHEMA.names, "class"}
            for name, label in labels.items():
                assert isinstance(label, fol.Classification)
                assert (label.label, label.confidence) == (rec[name], rec[f"{name}_prob"])
            seen += 1
    assert seen == len(tagged)


def test_an_existing_folder_is_kept_unless_overwrite(tmp_path: Path, tags_dir: tuple[Path, list],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fo"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    rc = main(["convert", str(tags_dir[0]), "--to", "fiftyone", "--out", str(out)])
    assert rc == 2 and "--out" in capsys.readouterr().err and (out / "mine.txt").exists()
    rc = main(["convert", str(tags_dir[0]), "--to", "fiftyone", "--out", str(out), "--overwrite",
               "--root", str(tmp_path)])
    assert rc == 0 and not (out / "mine.txt").exists() and (out / "manifest.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".fo.")] == []  # no temp folder left


# -- multi-label groups ----------------------------------------------------------------------------


def test_a_multi_label_group_is_one_attribute_per_value_present(tmp_path: Path) -> None:
    tags, recs = make_tags(tmp_path, 9, multi=True)
    rc, out = convert(tmp_path, tags)
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    tagged = [r for r in recs if "error" not in r]
    assert {len(r["marks"]) for r in tagged} >= {0, 1, 2}  # the data covers none, one and several
    for entry, rec in zip(manifest["index"], tagged):
        attrs = json.loads((out / entry["labels"]).read_text(encoding="utf-8"))["attrs"]["attrs"]
        # Exclusive groups as before, then the values present (absent ones left out), then the class.
        assert [a["name"] for a in attrs] == [*SCHEMA.names, *["marks"] * len(rec["marks"]), "class"]
        marks = [(a["value"], a["confidence"]) for a in attrs if a["name"] == "marks"]
        assert marks == [(v, rec["marks_probs"][v]) for v in MARKS if v in rec["marks"]]
        for a in attrs:
            if a["name"] in SCHEMA.names:
                assert (a["value"], a["confidence"]) == (rec[a["name"]], rec[f"{a['name']}_prob"])


def test_a_present_value_without_a_probability_has_no_confidence(tmp_path: Path) -> None:
    tags, recs = make_tags(tmp_path, 30, multi=True, top_k=1, classes=False)
    rc, out = convert(tmp_path, tags)
    assert rc == 0
    labels = sorted((out / "labels").iterdir())
    pairs = [(rec, json.loads(p.read_text(encoding="utf-8"))["attrs"]["attrs"])
             for rec, p in zip([r for r in recs if "error" not in r], labels)]
    dropped = 0
    for rec, attrs in pairs:
        for a in (a for a in attrs if a["name"] == "marks"):
            if a["value"] in rec["marks_probs"]:
                assert a["confidence"] == rec["marks_probs"][a["value"]]
            else:  # top_k=1 kept one probability: no made-up confidence for the other values present
                assert "confidence" not in a
                dropped += 1
    assert dropped > 0


def test_the_import_code_takes_multi_label_groups_in_a_second_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tags, _ = make_tags(tmp_path, 3, multi=True)
    rc, out = convert(tmp_path, tags)
    printed = capsys.readouterr().out
    assert rc == 0
    assert import_options(MULTI_SCHEMA, with_class=True) == [
        {"labels_dict": {"colour": "colour", "shape": "shape", "band": "band", "class": "class"}},
        {"labels_dict": {"marks": "marks"}, "multilabel": True},
    ]
    first, second = import_code(out, MULTI_SCHEMA, with_class=True)
    assert first.startswith(f'ds = fo.Dataset.from_dir("{out}", dataset_type=fo.types.FiftyOneImageLabelsDataset, ')
    assert second == (f'ds.merge_dir("{out}", dataset_type=fo.types.FiftyOneImageLabelsDataset, '
                      "labels_dict={'marks': 'marks'}, multilabel=True)")
    assert f"import: {first}\n        {second}\n" in printed


def test_without_multi_label_groups_the_import_is_the_plain_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tags, _ = make_tags(tmp_path, 3)
    rc, out = convert(tmp_path, tags)
    assert rc == 0 and import_options(SCHEMA, with_class=True) == [{}]
    assert f'import: fo.Dataset.from_dir("{out}", dataset_type=fo.types.FiftyOneImageLabelsDataset)\n' \
        in capsys.readouterr().out


def test_a_group_named_like_a_fiftyone_field_gets_a_prefix_in_the_import_code() -> None:
    schema = Schema.from_dict({"tags": ["a", "b"], "marks": {"kind": "multi", "values": ["x", "y"]}})
    assert import_options(schema, with_class=False) == [
        {"labels_dict": {"tags": "attrtag_tags"}}, {"labels_dict": {"marks": "marks"}, "multilabel": True}]


def test_fiftyones_importer_reads_classifications_in_the_second_pass(tmp_path: Path) -> None:
    foud = pytest.importorskip("fiftyone.utils.data")
    fol = pytest.importorskip("fiftyone.core.labels")
    tags, recs = make_tags(tmp_path, 9, multi=True)
    rc, out = convert(tmp_path, tags)
    assert rc == 0
    tagged = {str(tmp_path / r["path"]): r for r in recs if "error" not in r}
    first, second = import_options(MULTI_SCHEMA, with_class=True)
    with foud.FiftyOneImageLabelsDatasetImporter(str(out), **first) as importer:
        for image_path, _, labels in importer:
            rec = tagged[image_path]
            assert set(labels) == {*SCHEMA.names, "class"}  # as a plain import of exclusive groups
            assert all(isinstance(x, fol.Classification) for x in labels.values())
            assert (labels["colour"].label, labels["colour"].confidence) == (rec["colour"], rec["colour_prob"])
    seen = 0
    with foud.FiftyOneImageLabelsDatasetImporter(str(out), **second) as importer:
        for image_path, _, labels in importer:
            rec = tagged[image_path]
            seen += 1
            if not rec["marks"]:  # none present: no label, as FiftyOne's own export of an empty field
                assert labels == {}
                continue
            assert set(labels) == {"marks"} and isinstance(labels["marks"], fol.Classifications)
            got = [(c.label, c.confidence) for c in labels["marks"].classifications]
            assert got == [(v, rec["marks_probs"][v]) for v in rec["marks"]]
    assert seen == len(tagged) and any(not r["marks"] for r in tagged.values())
    # Why two passes: a plain import keeps one value of a multi-label group, as a Classification.
    with foud.FiftyOneImageLabelsDatasetImporter(str(out)) as importer:
        several = [labels["marks"] for path, _, labels in importer if len(tagged[path]["marks"]) > 1]
    assert several and all(isinstance(x, fol.Classification) for x in several)
