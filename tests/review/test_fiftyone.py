"""FiftyOne: a FiftyOneImageLabelsDataset folder with one Classification field per group.

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
from tests.helpers import SCHEMA
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
