"""Suspects into review and back: the HTML page, a Label Studio project most suspect first, and
its export as the manifest with the reviewed labels in place (no model: a hand-written audit)."""
from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from attrtag.auditing.labels import AuditLabel, GroupSummary
from attrtag.auditing.output import summary_dict, write_audit
from attrtag.schema import Schema
from tests.audit.conftest import COLOURS, SCHEMA_YAML
from tests.helpers import run_cli


def _label(planted: dict[str, Any], i: int, group: str, label: str, suggested: str, score: float,
           value: str | None = None) -> AuditLabel:
    row = planted["rows"][i]
    return AuditLabel(path=str((planted["dir"] / row["path"]).resolve()), line=i + 2, split=row["split"], group=group,
                      value=value, label=label, suggested=suggested, score=score, p_label=1 - score,
                      p_suggested=score - 0.05, flagged=True, rank=1)


@pytest.fixture(scope="module")
def audit_file(planted: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    rows = planted["rows"]
    wrong = {i: rows[i]["colour"] for i in (5, 17, 30)}  # planted: given one colour, showing the next
    truth = {i: list(COLOURS)[i % 3] for i in wrong}  # what the images show
    labels = [_label(planted, i, "colour", wrong[i], truth[i], s) for i, s in ((17, 0.95), (5, 0.9), (30, 0.7))]
    marks_row = next(i for i, r in enumerate(rows) if r["marks"] in ("dot", "dot|bar"))
    labels.insert(2, _label(planted, marks_row, "marks", "present", "absent", 0.8, value="dot"))
    out = tmp_path_factory.mktemp("review") / "suspects.csv"
    schema = Schema.from_dict({"colour": ["red", "green", "blue"], "band": ["top", "bottom"],
                               "marks": {"kind": "multi", "values": ["dot", "bar"]}})
    summary = [GroupSummary("colour", "exclusive", 58, 3, 4.2), GroupSummary("band", "exclusive", 48, 0, 0.0),
               GroupSummary("marks", "multi", 100, 1, 1.5)]
    write_audit(out, labels, {"rows": "suspects", "manifest": str(planted["manifest"]), "method": "both",
                              "schema": schema.to_dict(), "groups": summary_dict(summary)})
    return {**planted, "audit": out, "labels": labels, "truth": truth, "marks_row": marks_row}


def test_report_of_an_audit_shows_given_vs_suggested_with_thumbnails(audit_file: dict[str, Any], tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "suspects.html"
    code, stdout, err = run_cli(capsys, "report", audit_file["audit"], "--out", out, "--workers", "0",
                                "--no-progress")
    assert code == 0, err
    assert "report of 4 audited label(s)" in stdout
    html = out.read_text()
    blob = json.loads(html.split('id="attrtag-data">')[1].split("</script>")[0])
    assert [it[2] for it in blob["items"]] == ["colour", "colour", "marks", "colour"]
    assert all(blob["thumbs"][it[1]].startswith("data:image/jpeg;base64,") for it in blob["items"])
    # One thumbnail per image, however many of its labels are listed (an --all audit: one per group).
    assert len(blob["thumbs"]) == len({it[0] for it in blob["items"]})
    first = blob["items"][0]
    assert (first[4], first[5], first[6]) == ("red", "blue", 0.95)  # image 17: labelled red, shows blue
    assert [g["group"] for g in blob["groups"]] == ["colour", "band", "marks"] and 'id="f-group"' in html
    code, _, err = run_cli(capsys, "report", audit_file["audit"], "--out", tmp_path / "x.html", "--threshold", "0.5")
    assert code == 2 and "--threshold and --root are for tag outputs" in err and not (tmp_path / "x.html").exists()


def test_labelstudio_project_of_suspects_most_suspect_first_prefilled_with_the_given_labels(
        audit_file: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ls"
    code, stdout, err = run_cli(capsys, "convert", audit_file["audit"], "--to", "labelstudio", "--out", out)
    assert code == 0, err
    assert "wrote 4 review tasks, most suspect first" in stdout
    tasks = json.loads((out / "tasks.json").read_text())
    assert [Path(t["data"]["path"]).name for t in tasks] == [Path(x.path).name for x in audit_file["labels"]]
    scores = [t["predictions"][0]["score"] for t in tasks]
    assert scores == sorted(scores)  # ascending prediction score = most suspect first
    first = tasks[0]
    assert first["predictions"][0]["result"][0]["value"]["choices"] == [audit_file["labels"][0].label]
    assert "colour: given" in first["data"]["doubts"] and "suggested blue" in first["data"]["doubts"]
    marks = next(t for t in tasks if t["data"]["groups"] == "marks")
    given = audit_file["rows"][audit_file["marks_row"]]["marks"].split("|")
    assert marks["predictions"][0]["result"][0]["value"]["choices"] == given  # the manifest's, whole
    view = ET.fromstring((out / "config.xml").read_text())
    assert [c.get("name") for c in view.iter("Choices")] == ["colour", "marks"]
    assert [c.get("choice") for c in view.iter("Choices")] == ["single-radio", "multiple"]
    assert view.find("Text").get("value") == "$doubts"


def test_the_review_export_comes_back_as_the_manifest_with_the_corrections_in_place(
        audit_file: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ls = tmp_path / "ls"
    assert run_cli(capsys, "convert", audit_file["audit"], "--to", "labelstudio", "--out", ls)[0] == 0
    tasks = json.loads((ls / "tasks.json").read_text())
    for t in tasks:  # the reviewer fixes the colours and confirms the marks as shown
        result = json.loads(json.dumps(t["predictions"][0]["result"]))
        for r in result:
            if r["from_name"] == "colour":
                i = next(k for k, x in enumerate(audit_file["labels"]) if x.path == t["data"]["path"])
                r["value"]["choices"] = [audit_file["labels"][i].suggested]
        t["annotations"] = [{"id": 1, "result": result, "created_at": "2026-12-06T10:00:00"}]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    (tmp_path / "schema.yaml").write_text(SCHEMA_YAML)
    out = tmp_path / "fixed.csv"
    code, stdout, err = run_cli(capsys, "convert", export, "--from", "labelstudio", "--schema", tmp_path / "schema.yaml",
                                "--manifest", audit_file["manifest"], "--out", out)
    assert code == 0, err
    assert "(3 row(s) changed)" in stdout
    before = list(csv.DictReader(open(audit_file["manifest"])))
    after = list(csv.DictReader(open(out)))
    assert len(after) == len(before)
    for i, (a, b) in enumerate(zip(before, after)):
        expected = {**a, "colour": audit_file["truth"][i]} if i in audit_file["truth"] else a
        # the same image, named from the corrected manifest's own folder
        assert (out.parent / b.pop("path")).resolve() == (audit_file["manifest"].parent / expected.pop("path")).resolve()
        assert b == expected


REVIEW_CASES = [
    ("fiftyone", lambda f, t: ["convert", f["audit"], "--to", "fiftyone", "--out", t / "fo"],
     "is an audit file: it converts --to labelstudio"),
    ("root", lambda f, t: ["convert", f["audit"], "--to", "labelstudio", "--out", t / "ls", "--root", t],
     "--root is for tag outputs"),
    ("manifest-with-to", lambda f, t: ["convert", f["audit"], "--to", "labelstudio", "--out", t / "ls",
                                       "--manifest", f["manifest"]], "--manifest is for --from"),
    ("out-is-manifest", lambda f, t: ["convert", f["audit"], "--from", "labelstudio", "--schema", f["schema"],
                                      "--manifest", f["manifest"], "--out", f["manifest"], "--overwrite"],
     "is the manifest itself"),
    ("audit-without-summary", lambda f, t: ["report", f["copy"], "--out", t / "r.html"], "tag output"),
]


@pytest.mark.parametrize("name,argv,words", REVIEW_CASES, ids=[c[0] for c in REVIEW_CASES])
def test_review_of_an_audit_refuses_bad_options_in_one_line(audit_file: dict[str, Any], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str], name: str,
                                                            argv: Any, words: str) -> None:
    copy = tmp_path / "copy" / "suspects.csv"  # the rows without their summary
    copy.parent.mkdir()
    copy.write_text(audit_file["audit"].read_text())
    manifest = audit_file["manifest"].read_text()
    code, _, err = run_cli(capsys, *argv({**audit_file, "copy": copy}, tmp_path))
    assert code == 2 and len(err.strip().splitlines()) == 1 and words in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]
    assert audit_file["manifest"].read_text() == manifest
