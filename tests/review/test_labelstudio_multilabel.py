"""Label Studio with a multi-label group: checkboxes out, present/absent per value back.

Beside the exclusive groups of ``SCHEMA``, ``marks`` (dot, bar, ring) is decided at thresholds
0.3, 0.55 and 0.8 (``MARK_THRESHOLDS``): none is 0.5, so a score computed as if it were fails.
"""
from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from attrtag.cli import main
from attrtag.data.manifest import read_manifest
from attrtag.errors import ManifestError
from attrtag.review.corrections import read_labelstudio_export
from attrtag.review.labelstudio import labeling_config
from tests.helpers import MARKS, MULTI_SCHEMA, MULTI_SCHEMA_YAML, SCHEMA, make_multilabel_dataset
from tests.review.conftest import MARK_THRESHOLDS, make_tags


def convert(tmp_path: Path, tags: Path) -> Path:
    out = tmp_path / "ls"
    assert main(["convert", str(tags), "--to", "labelstudio", "--out", str(out), "--root", str(tags.parent)]) == 0
    return out


def expected_sureness(rec: dict[str, Any]) -> dict[str, float]:
    """Per group, as datasets/REVIEW.md says: the top probability, or the least sure value, a value
    scoring 0.5 on its threshold and 1 at probability 0 or 1 (linear on each side)."""
    out = {g: rec[f"{g}_prob"] for g in SCHEMA.names}
    marks = []
    for v, t in zip(MARKS, MARK_THRESHOLDS):
        p = rec["marks_probs"][v]
        marks.append(0.5 + 0.5 * ((p - t) / (1 - t) if v in rec["marks"] else (t - p) / t))
    out["marks"] = min(marks)
    return out


def test_the_config_has_checkboxes_for_a_multi_label_group() -> None:
    view = ET.fromstring(labeling_config(MULTI_SCHEMA, ["ruby"]))
    modes = {c.get("name"): c.get("choice") for c in view.findall("Choices")}
    assert modes == {"colour": "single-radio", "shape": "single-radio", "band": "single-radio",
                     "marks": "multiple", "class": "single-radio"}
    marks = next(c for c in view.findall("Choices") if c.get("name") == "marks")
    assert [x.get("value") for x in marks] == list(MARKS)


def test_predictions_list_the_values_present_and_the_score_counts_every_value(tmp_path: Path) -> None:
    tags, recs = make_tags(tmp_path, 40, multi=True)
    tasks = json.loads((convert(tmp_path, tags) / "tasks.json").read_text(encoding="utf-8"))
    tagged = {r["path"]: r for r in recs if "error" not in r}
    assert len(tasks) == len(tagged)
    scores = [t["predictions"][0]["score"] for t in tasks]
    assert scores == sorted(scores)  # least sure first
    least = []
    for t in tasks:
        rec, (pred,) = tagged[t["data"]["path"]], t["predictions"]
        want = expected_sureness(rec)
        assert pred["score"] == pytest.approx(min(want.values()))
        assert t["data"]["least_sure"] == min(want, key=lambda g: want[g])
        least.append(t["data"]["least_sure"])
        results = {r["from_name"]: r for r in pred["result"]}
        if rec["marks"]:
            assert results["marks"]["value"]["choices"] == rec["marks"]
            assert results["marks"]["score"] == pytest.approx(want["marks"])
        else:  # nothing checked: no result, as Label Studio stores an untouched checkbox group
            assert "marks" not in results
        for g in SCHEMA.names:  # exclusive groups as before
            assert (results[g]["value"]["choices"], results[g]["score"]) == ([rec[g]], rec[f"{g}_prob"])
    assert "marks" in least and set(least) - {"marks"}  # the data lets either kind come first


def test_the_label_studio_sdk_accepts_checkbox_config_and_predictions(tmp_path: Path) -> None:
    interface = pytest.importorskip("label_studio_sdk.label_interface")
    tags, _ = make_tags(tmp_path, 20, multi=True)
    out = convert(tmp_path, tags)
    li = interface.LabelInterface((out / "config.xml").read_text(encoding="utf-8"))
    li.validate()
    tasks = json.loads((out / "tasks.json").read_text(encoding="utf-8"))
    several = [t for t in tasks if any(len(r["value"]["choices"]) > 1 for r in t["predictions"][0]["result"])]
    assert several
    for t in tasks:
        assert li.validate_prediction(t["predictions"][0], return_errors=True) == []
    bad = json.loads(json.dumps(several[0]["predictions"][0]))
    next(r for r in bad["result"] if r["from_name"] == "marks")["value"]["choices"].append("star")
    assert li.validate_prediction(bad, return_errors=True)


# -- corrections back ------------------------------------------------------------------------------


def export_of(tasks: list[dict[str, Any]], labels: list[dict[str, Any] | None]) -> list[dict[str, Any]]:
    """Label Studio's JSON export: a value is a string (single choice) or a list (checkboxes)."""
    out = []
    for i, (t, chosen) in enumerate(zip(tasks, labels)):
        task = {"id": 100 + i, "data": t["data"], "annotations": []}
        if chosen is not None:
            result = [{"id": f"r{k}", "from_name": g, "to_name": "image", "type": "choices",
                       "value": {"choices": v if isinstance(v, list) else [v]}} for k, (g, v) in enumerate(chosen.items())]
            task["annotations"].append({"id": 500 + i, "was_cancelled": False, "ground_truth": False, "result": result})
        out.append(task)
    return out


def corrections_from(tmp_path: Path, labels: list[dict[str, Any] | None]) -> tuple[int, list[dict], Path]:
    tags, _ = make_tags(tmp_path, len(labels), multi=True)
    tasks = json.loads((convert(tmp_path, tags) / "tasks.json").read_text(encoding="utf-8"))
    export = tmp_path / "export.json"
    export.write_text(json.dumps(export_of(tasks, labels), indent=2), encoding="utf-8")
    schema = tmp_path / "schema.yaml"
    schema.write_text(MULTI_SCHEMA_YAML)
    out = tmp_path / "corrections.csv"
    rc = main(["convert", str(export), "--from", "labelstudio", "--schema", str(schema), "--out", str(out),
               "--root", str(tmp_path)])
    return rc, tasks, out


def test_checked_values_are_present_and_unchecked_ones_absent(tmp_path: Path) -> None:
    labels = [{"colour": "red", "marks": ["ring", "dot"]}, {"band": "top"}, None,
              {"marks": []}, {"shape": "s2", "marks": ["bar"]}]
    rc, tasks, out = corrections_from(tmp_path, labels)
    assert rc == 0
    rows = out.read_text(encoding="utf-8").splitlines()
    assert rows[0] == "path,colour,shape,band,marks"
    cells = [r.split(",")[1:] for r in rows[1:]]
    # Reviewed: every value seen, so a task without a marks result (or with none checked) is [].
    assert cells == [["red", "", "", "dot|ring"], ["", "", "top", "[]"], ["", "", "", "[]"], ["", "s2", "", "bar"]]
    manifest = read_manifest(out, MULTI_SCHEMA)  # what `attrtag train` reads, as it is
    assert [s.multi["marks"] for s in manifest.samples] == [(1, 0, 1), (0, 0, 0), (0, 0, 0), (0, 1, 0)]
    assert [s.labels for s in manifest.samples] == [(0, -1, -1, -1), (-1, -1, 0, -1), (-1, -1, -1, -1), (-1, 2, -1, -1)]
    assert [s.path for s in manifest.samples] == [str(tmp_path / t["data"]["path"]) for t, lab in zip(tasks, labels)
                                                  if lab is not None]


@pytest.mark.parametrize("marks, match", [
    (["dot", "star"], r"export\.json:\d+ \(task 100\): 'marks' = 'star' is not a value of the schema \(allowed: dot, bar, ring\)"),
    (["dot", "dot"], r"export\.json:\d+ \(task 100\): 'marks' lists a value twice"),
])
def test_a_bad_checkbox_answer_is_one_line_naming_the_task(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], marks: list[str], match: str
) -> None:
    rc, _, out = corrections_from(tmp_path, [{"marks": marks}, {"colour": "red"}])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and not out.exists()
    assert re.search(match, err), err


def test_an_exclusive_group_still_takes_exactly_one_choice(tmp_path: Path) -> None:
    tags, _ = make_tags(tmp_path, 1, multi=True)
    tasks = json.loads((convert(tmp_path, tags) / "tasks.json").read_text(encoding="utf-8"))
    export = tmp_path / "export.json"
    export.write_text(json.dumps(export_of(tasks, [{"colour": ["red", "blue"]}])), encoding="utf-8")
    with pytest.raises(ManifestError, match="'colour' has 2 choices"):
        read_labelstudio_export(export, MULTI_SCHEMA, root=tmp_path)


def test_multi_label_corrections_train_as_they_are(tmp_path: Path) -> None:
    """Reviewed checkboxes -> manifest -> one epoch of training with the masked per-value loss."""
    schema_path, manifest_path = make_multilabel_dataset(tmp_path / "data", 40)
    truth = read_manifest(manifest_path, MULTI_SCHEMA)
    tasks = [{"data": {"path": os.path.relpath(s.path, tmp_path)}} for s in truth.samples]
    # The reviewer checks the marks seen (unknown ones: nothing checked, so absent) and sets the colour.
    labels = [{"colour": MULTI_SCHEMA["colour"].values[s.labels[0]]} if s.labels[0] >= 0 else {} for s in truth.samples]
    for lab, s in zip(labels, truth.samples):
        lab["marks"] = [v for v, x in zip(MARKS, s.multi.get("marks", (0, 0, 0))) if x == 1]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(export_of(tasks, labels)), encoding="utf-8")
    corrections = tmp_path / "corrections.csv"
    assert main(["convert", str(export), "--from", "labelstudio", "--schema", str(schema_path),
                 "--out", str(corrections), "--root", str(tmp_path)]) == 0
    back = read_manifest(corrections, MULTI_SCHEMA).samples
    assert [s.multi["marks"] for s in back] == [tuple(int(x == 1) for x in s.multi.get("marks", (0, 0, 0)))
                                                for s in truth.samples]
    rc = main(["train", "--schema", str(schema_path), "--manifest", str(corrections), "--out", str(tmp_path / "run"),
               "--backbone", "test_resnet", "--image-size", "32", "--epochs", "1", "--batch-size", "16",
               "--workers", "0", "--device", "cpu"])
    assert rc == 0 and (tmp_path / "run" / "best.pt").is_file()
