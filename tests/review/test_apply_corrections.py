"""Reviewed labels put back into a manifest: the same images wherever it is written, and only
real changes counted."""
from __future__ import annotations

import csv
from pathlib import Path

from attrtag.data.manifest import read_manifest
from attrtag.review.corrections import Correction
from attrtag.review.suspects import apply_corrections
from attrtag.schema import Schema

SCHEMA = Schema.from_dict({"tone": ["light", "dark"], "marks": {"kind": "multi", "values": ["dot", "bar", "ring"]}})


def test_a_manifest_written_elsewhere_names_the_same_images_and_counts_real_changes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "m.csv").write_text("path,tone,marks\nimg/a.png,light,dot|ring\nimg/b.png,dark,bar\n"
                                f"{tmp_path}/elsewhere/c.png,dark,\n")
    fixes = [Correction(str(data / "img/a.png"), {"tone": "light", "marks": "ring|dot"}, "e:1"),  # the same, reordered
             Correction(str(data / "img/b.png"), {"tone": "light", "marks": "bar"}, "e:2")]  # tone changed
    out = tmp_path / "reviewed" / "fixed.csv"
    out.parent.mkdir()
    changed, unknown = apply_corrections(data / "m.csv", SCHEMA, fixes, out)
    assert (changed, unknown) == (1, 0)
    rows = list(csv.DictReader(open(out)))
    assert [r["marks"] for r in rows] == ["dot|ring", "bar", ""]  # a reordered cell is left as it was
    assert [r["tone"] for r in rows] == ["light", "light", "dark"]
    assert rows[0]["path"] == "../data/img/a.png" and rows[2]["path"] == f"{tmp_path}/elsewhere/c.png"
    before = [s.path for s in read_manifest(data / "m.csv", SCHEMA, check_files=False).samples]
    after = [s.path for s in read_manifest(out, SCHEMA, check_files=False).samples]
    assert [str(Path(p).resolve()) for p in after] == [str(Path(p).resolve()) for p in before]


def test_corrections_reach_the_manifests_images_through_a_linked_folder(tmp_path: Path) -> None:
    (tmp_path / "data" / "img").mkdir(parents=True)
    (tmp_path / "data" / "img" / "a.png").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "data", target_is_directory=True)
    (tmp_path / "data" / "m.csv").write_text("path,tone,marks\n../link/img/a.png,light,\n")  # through the link
    fixes = [Correction(str(tmp_path / "data/img/a.png"), {"tone": "dark"}, "e:1")]  # the export: the real folder
    changed, unknown = apply_corrections(tmp_path / "data" / "m.csv", SCHEMA, fixes, tmp_path / "fixed.csv")
    assert (changed, unknown) == (1, 0)
    assert [r["tone"] for r in csv.DictReader(open(tmp_path / "fixed.csv"))] == ["dark"]
