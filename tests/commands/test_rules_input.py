"""``attrtag rules suggest``: every bad value of every option is one line, exit 2, and no rules file
(not even an empty one) is left behind; a warning about coinciding classes is said once."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable

import pytest

from attrtag.zeroshot.rules import Rules
from attrtag.schema import Schema
from tests.helpers import run_cli

# class, colour, band, split: 'warm' is red, 'cool' green or blue; 'twin' is drawn like 'warm'.
# Every class has both moods (column 'mood', a or b by row): nothing to draft from it.
ROWS = ([("warm", "red", "top", "train")] * 6 + [("cool", c, "bottom", "train") for c in ("green", "blue") * 4]
        + [("twin", "red", "top", "train")] * 3 + [("warm", "red", "top", "test")] * 2)


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "colour", "band", "mood", "kind", "split"])
        w.writerows([(f"img/{i}.png", c, b, "ab"[i % 2], k, s) for i, (k, c, b, s) in enumerate(ROWS)])
    (tmp_path / "schema.yaml").write_text("groups:\n  colour: [red, green, blue]\n  band: [top, bottom]\n")
    (tmp_path / "narrow.yaml").write_text("groups:\n  colour: [red, green]\n  band: [top, bottom]\n")
    (tmp_path / "other.yaml").write_text("groups:\n  size: [s, m, l]\n")
    (tmp_path / "with_kind.yaml").write_text(
        "groups:\n  colour: [red, green, blue]\n  kind: [warm, cool, twin]\n")
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "folder").mkdir()
    (tmp_path / "taken.yaml").write_text("classes:\n  mine: {colour: red}\n")
    return {"dir": tmp_path, "manifest": manifest}


def _args(d: Path, out: object = None, **over: object) -> list[object]:
    """The good command line, with options replaced (None drops one) or added."""
    opts: dict[str, object] = {"--manifest": d / "m.csv", "--class-column": "kind",
                               "--out": out if out is not None else d / "new" / "rules.yaml"}
    opts.update({k.replace("_", "-") if k.startswith("--") else k: v for k, v in over.items()})
    argv: list[object] = ["rules", "suggest"]
    for k, v in opts.items():
        if v is not None:
            argv += [k, v]
    return argv


# (name, options over the good ones given the folder d, text the one stderr line must hold)
BAD: list[tuple[str, Callable[[Path], dict[str, object]], str]] = [
    ("cover nan", lambda d: {"--cover": "nan"}, "--cover must be a share in (0, 1], got nan"),
    ("cover 0", lambda d: {"--cover": "0"}, "--cover must be a share in (0, 1], got 0.0"),
    ("cover 1.5", lambda d: {"--cover": "1.5"}, "--cover must be a share in (0, 1], got 1.5"),
    ("max values 0", lambda d: {"--max-values": "0"}, "--max-values and --min-images must be at least 1"),
    ("min images 0", lambda d: {"--min-images": "0"}, "--max-values and --min-images must be at least 1"),
    ("min images too many", lambda d: {"--min-images": "100000"},
     "no class has --min-images 100000 images or more (the largest, 'cool', has 8 of 17)"),
    ("groups unknown", lambda d: {"--groups": "colour,size"}, "--groups: no column 'size' in"),
    ("groups the class column", lambda d: {"--groups": "colour,kind"}, "--groups: 'kind' is not an attribute column"),
    ("groups path", lambda d: {"--groups": "path"}, "--groups: 'path' is not an attribute column"),
    ("class column unknown", lambda d: {"--class-column": "animal"}, "--class-column animal: "),
    ("class column a group", lambda d: {"--class-column": "kind", "--schema": d / "with_kind.yaml"},
     "--class-column kind is a group of the schema"),
    ("split unknown", lambda d: {"--split": "holdout"}, "--split holdout: no row of"),
    ("schema missing", lambda d: {"--schema": d / "nope.yaml"}, "nope.yaml: cannot read YAML file"),
    ("schema of other labels", lambda d: {"--schema": d / "other.yaml"}, "--schema: none of its groups (size)"),
    ("schema without a value", lambda d: {"--schema": d / "narrow.yaml"}, "has value 'blue', not in the schema"),
    ("manifest missing", lambda d: {"--manifest": d / "nope.csv"}, "nope.csv: manifest not found"),
    ("manifest a folder", lambda d: {"--manifest": d / "folder"}, "manifest is a folder"),
    ("out a folder", lambda d: {"--out": d / "folder"}, "is a folder; name a file in it"),
    ("out under a file", lambda d: {"--out": d / "a_file" / "r.yaml"}, "a_file is a file, not a folder"),
    ("out exists", lambda d: {"--out": d / "taken.yaml"}, "taken.yaml exists; pass --overwrite"),
    ("every group left out", lambda d: {"--groups": "mood"}, "no class constrains any group (class 'cool': mood: every"),
]


def _snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in d.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name, over, want", BAD, ids=[b[0] for b in BAD])
def test_a_bad_option_value_is_one_line_and_leaves_no_rules_file(
    capsys: pytest.CaptureFixture[str], files: dict[str, Path], name: str, over: Callable[[Path], dict[str, object]],
    want: str,
) -> None:
    d = files["dir"]
    before = _snapshot(d)
    rc, _, err = run_cli(capsys, *_args(d, **over(d)))
    lines = err.splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("attrtag: error: "), err
    assert want in lines[0] and "Traceback" not in err, err
    assert _snapshot(d) == before and not (d / "new").exists()  # nothing written, half-written or left over


def test_the_good_command_writes_rules_that_load(capsys: pytest.CaptureFixture[str], files: dict[str, Path]) -> None:
    d = files["dir"]
    rc, out, err = run_cli(capsys, *_args(d))
    assert rc == 0 and "drafted 3 class(es) from 17 row(s)" in out
    rules = Rules.load(d / "new" / "rules.yaml", Schema.load(d / "schema.yaml"))
    assert rules.names == ("cool", "warm", "twin")
    # 'warm' and 'twin' have identical drafts: said once (by the lint, with file and line), not twice.
    said = [line for line in err.splitlines() if "'warm', 'twin'" in line or "warm, twin" in line]
    assert len(said) == 1 and "identical rules" in said[0] and "rules.yaml:" in said[0]
    assert [p.name for p in (d / "new").iterdir()] == ["rules.yaml"]  # no temporary file left beside it


def test_every_row_in_test_needs_split_test(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,colour,kind,split\na.png,red,warm,test\nb.png,green,cool,test\n")
    rc, _, err = run_cli(capsys, "rules", "suggest", "--manifest", manifest, "--class-column", "kind",
                         "--out", tmp_path / "r.yaml")
    assert rc == 2 and err.count("\n") == 1 and "every row is in the test split" in err and "--split test" in err
    assert not (tmp_path / "r.yaml").exists()
    rc, _, _ = run_cli(capsys, "rules", "suggest", "--manifest", manifest, "--class-column", "kind",
                       "--out", tmp_path / "r.yaml", "--split", "test")
    assert rc == 0 and (tmp_path / "r.yaml").exists()
