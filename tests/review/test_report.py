"""``attrtag report``: the data blob, thumbnails embedded or linked, the page, bad tag files."""
from __future__ import annotations

import base64
import io
import json
import re
import urllib.parse
from pathlib import Path

import pytest
from PIL import Image

from attrtag.cli import main
from attrtag.review.report import report_data, report_thresholds, write_report
from attrtag.review.sources import load_tags
from tests.helpers import MARKS, SCHEMA
from tests.review.conftest import MARK_THRESHOLDS, make_tags

BLOB = re.compile(r'<script type="application/json" id="attrtag-data">(.*?)</script>', re.S)


def blob(html_path: Path) -> dict:
    (text,) = BLOB.findall(html_path.read_text(encoding="utf-8"))
    return json.loads(text)


def test_the_page_holds_every_record_in_one_blob(tmp_path: Path, tags_dir: tuple[Path, list]) -> None:
    tags, recs = tags_dir
    out = tmp_path / "report.html"
    assert main(["report", str(tags), "--out", str(out), "--root", str(tmp_path), "--workers", "1"]) == 0
    data = blob(out)
    assert [g["name"] for g in data["groups"]] == list(SCHEMA.names)
    assert data["classes"] == ["ruby", "sky", "moss", "unknown"]
    assert data["errors"] == ["missing", "truncated"]
    assert len(data["items"]) == len(recs)
    for item, rec in zip(data["items"], recs):
        path, thumb, values, probs, cls, cls_prob, err, message = item
        assert path == rec["path"]
        if "error" in rec:
            assert (thumb, values, probs, data["errors"][err], message) == (None, None, None, rec["error"], rec["message"])
            continue
        assert [g["values"][v] for g, v in zip(data["groups"], values)] == [rec[g] for g in SCHEMA.names]
        assert probs == [rec[f"{g}_prob"] for g in SCHEMA.names]
        assert (data["classes"][cls], cls_prob, err) == (rec["class"], rec["class_prob"], -1)
        # An embedded thumbnail: a 128 px JPEG of the image.
        head, b64 = thumb.split(",", 1)
        assert head == "data:image/jpeg;base64"
        with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
            assert (im.format, im.size) == ("JPEG", (128, 128))
    assert "<script src" not in out.read_text(encoding="utf-8")  # nothing fetched: works offline


def test_thumbnails_show_the_image(tmp_path: Path) -> None:
    tags, recs = make_tags(tmp_path, 2, classes=False)
    folder = tmp_path / "img"
    Image.new("RGB", (300, 100), (200, 30, 30)).save(folder / "img0000.png")  # wide and red
    summary = write_report(load_tags(tags, root=tmp_path), tmp_path / "r.html", thumb_size=64, workers=0)
    item = blob(summary.path)["items"][0]
    with Image.open(io.BytesIO(base64.b64decode(item[1].split(",", 1)[1]))) as im:
        centre, top = im.getpixel((32, 32)), im.getpixel((32, 4))
    assert abs(centre[0] - 200) < 20 and centre[1] < 60  # the image, whole ...
    assert min(top) > 220  # ... padded to a square with light grey, not cropped


def test_linked_thumbnails_point_at_the_images_from_the_page(tmp_path: Path, tags_dir: tuple[Path, list]) -> None:
    tags, recs = tags_dir
    out = tmp_path / "reports" / "deep" / "r.html"
    summary = write_report(load_tags(tags, root=tmp_path), out, thumbnails="link")
    items = [it for it in blob(out)["items"] if it[6] < 0]
    for it in items:
        assert (out.parent / urllib.parse.unquote(it[1])).resolve() == (tmp_path / it[0]).resolve()
    embedded = write_report(load_tags(tags, root=tmp_path), tmp_path / "e.html", workers=0)
    assert summary.bytes < embedded.bytes / 3


def test_an_image_gone_since_tagging_has_no_thumbnail(tmp_path: Path, tags_dir: tuple[Path, list]) -> None:
    tags, recs = tags_dir
    (tmp_path / recs[0]["path"]).unlink()
    summary = write_report(load_tags(tags, root=tmp_path), tmp_path / "r.html", workers=0)
    assert summary.no_thumbnail == 1 and summary.failed == 2 and summary.images == len(recs)
    assert blob(summary.path)["items"][0][1] is None


def test_a_path_cannot_break_out_of_the_data_blob(tmp_path: Path) -> None:
    tags, recs = make_tags(tmp_path, 2, classes=False)
    data = report_data(load_tags(tags, root=tmp_path), [None, None], {})
    data["items"][0][0] = "</script><script>alert(1)</script>&amp;'\u2028"
    from attrtag.review.report import render_report

    page = tmp_path / "p.html"
    page.write_text(render_report(data, title="t <b>"), encoding="utf-8")
    assert blob(page)["items"][0][0] == data["items"][0][0]
    assert "<title>t &lt;b&gt;</title>" in page.read_text(encoding="utf-8")


def test_uncertain_thresholds_come_from_the_option_then_the_tags_then_a_default(tmp_path: Path) -> None:
    with_own, _ = make_tags(tmp_path / "a", 2, thresholds={"colour": 0.7})
    without, _ = make_tags(tmp_path / "b", 2)
    assert report_thresholds(load_tags(with_own)) == {"colour": 0.7}
    assert report_thresholds(load_tags(with_own), {"band": 0.9}) == {"band": 0.9}
    assert report_thresholds(load_tags(without)) == {g: 0.5 for g in SCHEMA.names}
    data = report_data(load_tags(with_own), [None, None], report_thresholds(load_tags(with_own)))
    assert data["thresholds"] == [0.7, None, None]


@pytest.mark.parametrize("damage, match", [
    ("sidecar", r"tags\.csv: no tags\.csv\.meta\.json next to it"),
    ("torn", r"tags\.csv:7: the last record is incomplete"),
    ("header", r"tags\.csv\.meta\.json: unreadable attrtag header"),
])
def test_a_tag_file_that_is_not_one_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str, match: str
) -> None:
    tags, _ = make_tags(tmp_path, 3, fmt="csv")
    if damage == "sidecar":
        (tmp_path / "tags.csv.meta.json").unlink()
    elif damage == "torn":
        with open(tags, "ab") as f:
            f.write(b"img/x.png,red,0.5")
    else:
        (tmp_path / "tags.csv.meta.json").write_text('{"schema": {"colour": ["red"]}}')
    out = tmp_path / "report.html"
    for argv in (["report", str(tags), "--out", str(out)],
                 ["convert", str(tags), "--to", "labelstudio", "--out", str(tmp_path / "ls")]):
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and re.search(match, err), err
    assert not out.exists() and not (tmp_path / "ls").exists()


def test_bad_options_are_one_line(tmp_path: Path, tags_dir: tuple[Path, list], capsys: pytest.CaptureFixture[str]) -> None:
    tags, _ = tags_dir
    cases = [
        (["convert", str(tags), "--to", "cvat", "--out", str(tmp_path / "x")], "--to cvat: not one of fiftyone, labelstudio"),
        (["convert", str(tags), "--from", "cvat", "--out", str(tmp_path / "x")], "--from cvat: not one of labelstudio"),
        (["convert", str(tags), "--from", "labelstudio", "--out", str(tmp_path / "x")], "needs --schema"),
        (["report", str(tags), "--out", str(tmp_path / "r.html"), "--thumbnails", "inline"], "--thumbnails inline"),
        (["report", str(tags), "--out", str(tmp_path / "r.html"), "--threshold", "size=0.5"], "no group 'size'"),
        (["report", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "r.html")], "nope.jsonl: tag output not found"),
    ]
    for argv, match in cases:
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 2 and match in err and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "x").exists() and not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("multi, old, new, named", [
    (False, '"colour": "', '"colour": "purple', "field 'colour': 'purple"),
    (True, '"marks": [', '"marks": ["star", ', "field 'marks': ['star'"),
], ids=["exclusive", "multi-label"])
def test_a_record_with_a_value_outside_its_schema_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           multi: bool, old: str, new: str, named: str) -> None:
    tags, recs = make_tags(tmp_path, 3, classes=False, multi=multi)
    lines = tags.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[0] = lines[0].replace(old, new, 1)
    tags.write_text("".join(lines), encoding="utf-8")
    rc = main(["report", str(tags), "--out", str(tmp_path / "r.html"), "--root", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and f"{tags}:1: {named}" in err and err.count("\n") == 1, err  # the reader names file and line
    assert not (tmp_path / "r.html").exists()


# -- multi-label groups ----------------------------------------------------------------------------


def test_a_multi_label_group_holds_the_values_present_and_every_probability(tmp_path: Path) -> None:
    tags, recs = make_tags(tmp_path, 12, multi=True, thresholds={"colour": 0.6})
    data = report_data(load_tags(tags, root=tmp_path), [None] * 12, report_thresholds(load_tags(tags)))
    assert data["groups"][:3] == [{"name": g.name, "values": list(g.values), "kind": "exclusive"} for g in SCHEMA]
    assert data["groups"][3] == {"name": "marks", "values": list(MARKS), "kind": "multi",
                                 "value_thresholds": list(MARK_THRESHOLDS)}
    assert data["thresholds"] == [0.6, None, None, None]  # uncertain concerns exclusive groups only
    for item, rec in zip(data["items"], recs):
        if "error" in rec:
            assert item[2] is None and item[3] is None
            continue
        values, probs = item[2], item[3]
        assert [MARKS[i] for i in values[3]] == rec["marks"]
        assert probs[3] == [rec["marks_probs"][v] for v in MARKS]
        assert values[:3] == [SCHEMA[g].index(rec[g]) for g in SCHEMA.names]  # exclusive groups as before
        assert probs[:3] == [rec[f"{g}_prob"] for g in SCHEMA.names]


def test_a_value_left_out_by_top_k_has_a_null_probability(tmp_path: Path) -> None:
    tags, recs = make_tags(tmp_path, 6, multi=True, top_k=2, classes=False)
    data = report_data(load_tags(tags, root=tmp_path), [None] * 6, {})
    for item, rec in zip((it for it in data["items"] if it[6] < 0), (r for r in recs if "error" not in r)):
        assert item[3][3] == [rec["marks_probs"].get(v) for v in MARKS] and item[3][3].count(None) == 1


def test_the_default_uncertain_thresholds_leave_multi_label_groups_out(tmp_path: Path) -> None:
    tags, _ = make_tags(tmp_path, 2, multi=True)
    assert report_thresholds(load_tags(tags)) == {g: 0.5 for g in SCHEMA.names}
