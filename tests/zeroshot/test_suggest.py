"""``attrtag rules suggest``: rules drafted from a small hand-made manifest, checked value by value."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from attrtag.cli import main
from attrtag.data.manifest import read_manifest
from attrtag.errors import AttrtagError
from attrtag.schema import Schema
from attrtag.zeroshot.rules import Rules
from attrtag.zeroshot.suggest import suggest_rules

# Group sizes 3, 4 and 2; "tail" is only "yes"/"no" (YAML 1.1 booleans, so they must be quoted).
SCHEMA_YAML = "groups:\n  covering: [fur, feathers, scales]\n  colour: [red, green, blue, grey]\n  tail: [\"no\", \"yes\"]\n"
# class, covering, colour, tail, split; "" = no label.
ROWS = (
    # otter: fur 4/4; colour grey 3, red 1 (75%: grey alone does not reach 80%); tail yes 3 of 3 labelled.
    [("otter", "fur", "grey", "yes", "train")] * 3 + [("otter", "fur", "red", "", "val")]
    # duck: feathers 5/5; colour 2 red, 2 green, 1 blue -> red + green reach 80%; tail never labelled.
    + [("duck", "feathers", c, "", "train") for c in ("red", "red", "green", "green", "blue")]
    # goose: green 3, then red and blue 1 each (red first: schema order) -> the same values as duck
    # in every group, with other weights: they coincide.
    + [("goose", "feathers", c, "", "train") for c in ("red", "green", "green", "green", "blue")]
    # koi: colour spread over all four values -> left out; covering scales 2/2.
    + [("koi", "scales", c, "no", "train") for c in ("red", "green", "blue", "grey")]
    # test rows are not read by default: they would make otter's colour grey-only.
    + [("otter", "fur", "grey", "yes", "test")] * 8
    + [("", "fur", "red", "no", "train")]  # no class: ignored
)


@pytest.fixture()
def manifest(tmp_path: Path) -> Path:
    (tmp_path / "schema.yaml").write_text(SCHEMA_YAML)
    path = tmp_path / "manifest.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "covering", "colour", "tail", "split", "animal"])
        for i, (cls, cov, col, tail, split) in enumerate(ROWS):
            w.writerow([f"img/{i}.png", cov, col, tail, split, cls])
    return path


def test_draft_lists_values_with_weights_and_reports_coinciding_classes(manifest: Path) -> None:
    schema = Schema.load(manifest.parent / "schema.yaml")
    samples = [s for s in read_manifest(manifest, schema, check_files=False).samples if s.split != "test"]
    draft = suggest_rules(samples, schema, "animal", cover=0.8, max_values=3)
    by_name = {c.name: c for c in draft.classes}
    assert [c.name for c in draft.classes] == ["duck", "goose", "koi", "otter"]  # most images first, then by name
    assert by_name["otter"].images == 4
    assert by_name["otter"].spec == {"covering": "fur", "colour": {"grey": 0.75, "red": 0.25}, "tail": "yes"}
    assert by_name["duck"].spec == {"covering": "feathers", "colour": {"red": 0.4, "green": 0.4}}
    assert by_name["duck"].left_out == {"tail": "no label"}
    assert by_name["goose"].spec["colour"] == {"green": 0.6, "red": 0.2}
    assert by_name["koi"].spec == {"covering": "scales", "tail": "no"}
    assert by_name["koi"].left_out == {"colour": "4 values needed to cover 80%"}
    assert draft.coincident == (("duck", "goose"),)
    # A wider cover needs more values; one value more than allowed drops the group.
    wide = {c.name: c for c in suggest_rules(samples, schema, "animal", cover=1.0, max_values=2).classes}
    assert "colour" not in wide["duck"].spec and wide["otter"].spec["colour"] == {"grey": 0.75, "red": 0.25}
    # The dict form loads as rules with the same weights.
    rules = Rules.from_dict(draft.to_dict(), schema)
    assert rules["otter"].constraints[1].weights == (0.75, 0.25)


def test_bad_options_and_no_class_are_refused(manifest: Path) -> None:
    schema = Schema.load(manifest.parent / "schema.yaml")
    samples = read_manifest(manifest, schema, check_files=False).samples
    with pytest.raises(AttrtagError, match="cover must be a share"):
        suggest_rules(samples, schema, "animal", cover=1.5)
    with pytest.raises(AttrtagError, match="no image has a class in column 'species'"):
        suggest_rules(samples, schema, "species")


def test_cli_writes_a_rules_file_that_loads_and_names_coinciding_classes(
    manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = manifest.parent / "drafted.yaml"
    argv = ["rules", "suggest", "--manifest", str(manifest), "--class-column", "animal", "--out", str(out),
            "--schema", str(manifest.parent / "schema.yaml")]
    assert main(argv) == 0
    cap = capsys.readouterr()
    assert "drafted 4 class(es) from 19 row(s)" in cap.out
    assert "classes duck, goose accept the same values in every group" in cap.err
    assert "identical rules" not in cap.err  # weights differ: the exact-signature lint does not fire
    text = out.read_text()
    assert "# 4 image(s); left out: colour (4 values needed to cover 80%)" in text  # koi
    assert "tail: 'no'" in text or 'tail: "no"' in text  # quoted: not read back as a boolean
    schema = Schema.load(manifest.parent / "schema.yaml")
    rules = Rules.load(out, schema)
    assert rules.names == ("duck", "goose", "koi", "otter")
    assert rules["koi"].constraints[1].values == ("no",)
    # An existing file is kept unless --overwrite; the test split is read only when asked for.
    assert main(argv) == 2 and "--overwrite" in capsys.readouterr().err
    assert main(argv + ["--overwrite", "--split", "test"]) == 0
    capsys.readouterr()
    assert yaml.safe_load(out.read_text())["classes"] == {"otter": {"covering": "fur", "colour": "grey", "tail": "yes"}}


def test_the_python_call_writes_what_the_cli_writes(manifest: Path) -> None:
    # The README's own example: attrtag.suggest_rules(manifest, class_column, out, schema=...).
    import attrtag

    schema = manifest.parent / "schema.yaml"
    draft, rows = attrtag.suggest_rules(manifest, "animal", manifest.parent / "api.yaml", schema=schema)
    assert rows == 19 and [c.name for c in draft.classes] == ["duck", "goose", "koi", "otter"]
    assert main(["rules", "suggest", "--manifest", str(manifest), "--class-column", "animal", "--out",
                 str(manifest.parent / "cli.yaml"), "--schema", str(schema)]) == 0
    cli = (manifest.parent / "cli.yaml").read_text()
    assert cli.endswith((manifest.parent / "api.yaml").read_text())  # the CLI only adds its header comment


def test_cli_takes_groups_from_the_csv_columns_without_a_schema(
    manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = manifest.parent / "drafted.yaml"
    assert main(["rules", "suggest", "--manifest", str(manifest), "--class-column", "animal", "--out", str(out)]) == 0
    capsys.readouterr()
    assert set(yaml.safe_load(out.read_text())["classes"]["otter"]) == {"covering", "colour", "tail"}
    assert main(["rules", "suggest", "--manifest", str(manifest), "--class-column", "animal", "--out", str(out),
                 "--overwrite", "--groups", "covering"]) == 0
    capsys.readouterr()
    assert yaml.safe_load(out.read_text())["classes"]["otter"] == {"covering": "fur"}
    rc = main(["rules", "suggest", "--manifest", str(manifest), "--class-column", "animal", "--out", str(out),
               "--overwrite", "--groups", "size"])
    assert rc == 2 and "no column 'size'" in capsys.readouterr().err
    # A multi-label column cannot be read as an exclusive group: its kind must come from a schema.
    rows = manifest.read_text().splitlines()
    multi = manifest.parent / "multi.csv"
    multi.write_text("\n".join([rows[0] + ",marks", rows[1] + ",dot|ring", *(r + ",[]" for r in rows[2:])]) + "\n")
    rc = main(["rules", "suggest", "--manifest", str(multi), "--class-column", "animal", "--out", str(out),
               "--overwrite"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert "multi.csv:2: column 'marks' holds the multi-label cell 'dot|ring'" in err and "pass --schema S" in err


def test_a_missing_manifest_is_one_line_with_or_without_a_schema(
    manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = manifest.parent / "nope.csv"
    base = ["rules", "suggest", "--manifest", str(missing), "--class-column", "animal",
            "--out", str(manifest.parent / "drafted.yaml")]
    for extra in ([], ["--schema", str(manifest.parent / "schema.yaml")]):
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert err.splitlines() == [f"attrtag: error: {missing}: manifest not found"]
