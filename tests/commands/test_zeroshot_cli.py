"""Class rules on the command line: ``tag --rules``, embedded rules, rule errors, ``evaluate --rules``."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from attrtag.cli import main
from attrtag.errors import AttrtagError
from attrtag.zeroshot.rules import Rules
from attrtag.tagging import read_output
from attrtag.zeroshot.evaluation import LabelledScores, evaluate_zero_shot, format_zero_shot, seen_and_unseen
from attrtag.tagging import CLASS_FIELDS
from tests.helpers import draw
from tests.helpers import SCHEMA, make_checkpoint, write_images

RULES = """\
classes:
  red_small_top:  {colour: red, shape: s0, band: top}
  red_big_bottom: {colour: red, shape: s6, band: bottom}
  green_top:      {colour: green, band: top}
  blue_bottom:    {colour: blue, band: bottom}
  green_bottom:   {colour: green, band: bottom}
  blue_top:       {colour: blue, band: top}
"""
SIGNATURES = {  # (colour, shape, band) drawn for each class
    "red_small_top": ("red", "s0", "top"), "red_big_bottom": ("red", "s6", "bottom"),
    "green_top": ("green", "s3", "top"), "blue_bottom": ("blue", "s2", "bottom"),
    "green_bottom": ("green", "s4", "bottom"), "blue_top": ("blue", "s1", "top"),
}
UNSEEN = ("green_bottom", "blue_top")  # no training image


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A checkpoint, images, rules, and a rules-embedding ONNX export of the checkpoint (when exportable)."""
    d = tmp_path_factory.mktemp("zs")
    write_images(d / "imgs", 5, size=36)
    (d / "rules.yaml").write_text(RULES)
    (d / "other.yaml").write_text("classes:\n  reddish: {colour: red}\n  not_red: {colour: [green, blue]}\n")
    out = {"dir": d, "model": make_checkpoint(d / "model.pt"), "images": d / "imgs", "rules": d / "rules.yaml",
           "other": d / "other.yaml"}
    try:
        from attrtag_onnx.export import export_onnx
    except ImportError:
        return out
    rules = Rules.load(out["rules"], SCHEMA).to_dict()
    out["onnx"] = export_onnx(out["model"], d / "model.onnx", rules=rules, batch_check=2).path
    return out


def tag(
    capsys: pytest.CaptureFixture[str], model: Path, images: Path, out: Path, *extra: object
) -> tuple[int, str, str]:
    return run(capsys, "tag", model, images, "--out", out, "--workers", "0", "--no-progress", *extra)


# --- tag ---------------------------------------------------------------------------------------


def test_embedded_rules_are_used_unless_no_rules_or_rules(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, world: dict[str, Path]
) -> None:
    if "onnx" not in world:
        pytest.skip("ONNX export not available")
    rc, _, _ = tag(capsys, world["onnx"], world["images"], tmp_path / "emb.jsonl")
    assert rc == 0
    meta, records = read_output(tmp_path / "emb.jsonl")
    assert meta.layout.classes.source == "model.onnx metadata"
    assert meta.layout.classes.rules == Rules.load(world["rules"], SCHEMA)
    assert all(r["class"] in meta.layout.classes.rules.names and len(r["classes"]) == 5 for r in records)

    rc, _, _ = tag(capsys, world["onnx"], world["images"], tmp_path / "none.jsonl", "--no-rules")
    assert rc == 0
    meta, records = read_output(tmp_path / "none.jsonl")
    assert meta.layout.classes is None and not any(set(CLASS_FIELDS) & set(r) for r in records)

    rc, _, _ = tag(capsys, world["onnx"], world["images"], tmp_path / "other.jsonl", "--rules", world["other"])
    assert rc == 0
    meta, records = read_output(tmp_path / "other.jsonl")
    assert {r["class"] for r in records} <= {"reddish", "not_red"} and len(records[0]["classes"]) == 2

    with pytest.raises(SystemExit) as exc:
        tag(capsys, world["onnx"], world["images"], tmp_path / "x.jsonl", "--no-rules", "--rules", world["other"])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parquet
def test_class_fields_in_every_format(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, world: dict[str, Path]
) -> None:
    import pyarrow.parquet as pq

    got = {}
    for fmt in ("jsonl", "csv", "parquet"):
        rc, _, _ = tag(capsys, world["model"], world["images"], tmp_path / f"t.{fmt}", "--rules", world["rules"],
                       "--threshold", "0.5", "--class-top-k", "2")
        assert rc == 0
        got[fmt] = read_output(tmp_path / f"t.{fmt}")[1]
    assert got["jsonl"] == got["csv"] == got["parquet"]
    assert all(len(r["classes"]) == 2 for r in got["jsonl"])
    table = pq.read_table(tmp_path / "t.parquet")
    assert table.column_names[-8:] == ["band_probs", "uncertain", *CLASS_FIELDS, "error", "message"]
    assert str(table.schema.field("class_prob").type) == "double"
    assert isinstance(json.loads(table.column("classes")[0].as_py()), list)
    with open(tmp_path / "t.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert json.loads(row["class_explanation"]) == got["jsonl"][0]["class_explanation"]


def test_resume_refuses_other_rules_and_resumes_same(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, world: dict[str, Path]
) -> None:
    out = tmp_path / "r.jsonl"
    assert tag(capsys, world["model"], world["images"] / "img0000.png", out, "--rules", world["rules"])[0] == 0
    rc, stdout, _ = tag(capsys, world["model"], world["images"], out, "--rules", world["rules"])
    assert rc == 0 and "tagged 4" in stdout and "1 already in" in stdout
    for extra in (["--rules", world["other"]], ["--rules", world["rules"], "--set", "band=top"],
                  ["--rules", world["rules"], "--class-top-k", "3"], []):
        rc, _, err = tag(capsys, world["model"], world["images"], out, *extra)
        assert rc == 2 and err.count("\n") == 1 and "class rules" in err and "--overwrite" in err, extra


def test_rules_errors_are_one_line_with_file_and_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, world: dict[str, Path]
) -> None:
    bad_value = tmp_path / "bad_value.yaml"
    bad_value.write_text("classes:\n  a: {colour: red}\n  b:\n    colour: purple\n")
    bad_group = tmp_path / "bad_group.yaml"
    bad_group.write_text("classes:\n  a: {colour: red}\n  b: {size: xl}\n")
    syntax = tmp_path / "syntax.yaml"
    syntax.write_text("classes:\n  a: {colour: red\n")
    named_unknown = tmp_path / "unknown.yaml"
    named_unknown.write_text("classes:\n  unknown: {colour: red}\n")
    tags = tmp_path / "plain.jsonl"
    assert tag(capsys, world["model"], world["images"], tags)[0] == 0
    cases = [
        (bad_value, f"{bad_value}:4: class 'b': unknown value 'purple' for group 'colour'"),
        (bad_group, f"{bad_group}:3: class 'b': unknown group 'size'"),
        (syntax, f"{syntax}:3: invalid YAML"),
        (named_unknown, "a class is named 'unknown'"),
        (tmp_path / "missing.yaml", "cannot read YAML file"),
    ]
    for rules, message in cases:
        for argv in (("tag", world["model"], world["images"], "--out", tmp_path / "o.jsonl", "--rules", rules),
                     ("classify", tags, "--rules", rules, "--out", tmp_path / "o.jsonl")):
            rc, _, err = run(capsys, *argv)
            assert rc == 2 and err.count("\n") == 1 and message in err, (argv, err)
            assert not (tmp_path / "o.jsonl").exists()


def test_lint_warnings_are_printed_and_the_run_goes_on(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, world: dict[str, Path]
) -> None:
    rules = tmp_path / "twins.yaml"
    rules.write_text("classes:\n  a: {colour: red}\n  b: {colour: red}\n  c:\n  d: {band: [top, bottom]}\n")
    rc, stdout, err = tag(capsys, world["model"], world["images"], tmp_path / "t.jsonl", "--rules", rules)
    assert rc == 0 and "tagged 5" in stdout
    warnings = [line for line in err.splitlines() if line.startswith("attrtag: warning:")]
    assert len(warnings) == 3
    assert f"{rules}:4: class 'c' constrains no group; it cannot be scored" in warnings[0]
    assert f"{rules}:2: classes 'a', 'b' have identical rules" in warnings[1]
    assert "class 'd' accepts every value of 'band'" in warnings[2]
    meta, records = read_output(tmp_path / "t.jsonl")
    assert meta.layout.classes.rules.names == ("a", "b", "d")  # the unscorable class is left out
    assert all(len(r["classes"]) == 3 for r in records)
    # An intervention on a group no class constrains cannot change anything: said, not refused.
    rc, _, err = tag(capsys, world["model"], world["images"], tmp_path / "s.jsonl", "--rules", rules,
                     "--set", "shape=s1")
    assert rc == 0 and "--set shape=s1: no class of" in err and "constrains 'shape'" in err
    rules.write_text("classes:\n  c:\n")
    rc, _, err = tag(capsys, world["model"], world["images"], tmp_path / "u.jsonl", "--rules", rules)
    assert rc == 2 and "no class constrains any group" in err.splitlines()[-1]


def test_class_options_need_rules(capsys: pytest.CaptureFixture[str], tmp_path: Path, world: dict[str, Path]) -> None:
    for extra in (["--set", "band=top"], ["--class-top-k", "2"], ["--unknown-threshold", "0.3"]):
        rc, _, err = tag(capsys, world["model"], world["images"], tmp_path / "t.jsonl", *extra)
        assert rc == 2 and err.count("\n") == 1 and "needs class rules" in err and "--rules R" in err


# --- evaluate ----------------------------------------------------------------------------------


def write_class_manifest(root: Path) -> Path:
    """Images of the 6 classes: 3 training images of each seen class, 2 val and 2 test of every class."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    plan = [(c, "train", 3) for c in SIGNATURES if c not in UNSEEN]
    plan += [(c, s, 2) for c in SIGNATURES for s in ("val", "test")]
    plan.append(("", "test", 1))  # an image without a class: attribute metrics only
    plan.append(("zebra", "test", 1))  # a class the rules do not have: left out and counted
    for klass, split, n in plan:
        for _ in range(n):
            i = len(rows)
            colour, shape, band = SIGNATURES.get(klass, ("red", "s3", "top"))
            draw(colour, shape, band, seed=i).save(root / "img" / f"{i:03d}.png")
            rows.append({"path": f"img/{i:03d}.png", "colour": colour, "shape": shape, "band": band, "split": split,
                         "class": klass})
    path = root / "manifest.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "colour", "shape", "band", "split", "class"])
        w.writeheader()
        w.writerows(rows)
    return path


def test_evaluate_reports_zsl_and_gzsl(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, world: dict[str, Path]
) -> None:
    manifest = write_class_manifest(tmp_path / "data")
    out = tmp_path / "eval"
    rc, stdout, err = run(capsys, "evaluate", "--checkpoint", world["model"], "--manifest", manifest, "--rules",
                          world["rules"], "--split", "test", "--out", out, "--workers", "0", "--device", "cpu")
    assert rc == 0, err
    report = json.loads((out / "metrics.json").read_text())
    assert report["images"] == 14  # the attribute report keeps to --split test
    zs = report["zero_shot"]
    assert zs["unseen"] == list(UNSEEN) and zs["seen"] == [c for c in SIGNATURES if c not in UNSEEN]
    assert zs["split"] == "test" and zs["calibration_split"] == "val"
    assert zs["images"] == {"zsl": 4, "gzsl_seen": 8, "gzsl_unseen": 4, "calibration": 12}
    assert zs["skipped_classes"] == {"zebra": 1}
    # Random scores trace the line from (0, 1/4) to (1/2, 0): AUSUC 1 / (2 * 4 seen * 2 unseen).
    assert zs["chance"] == {"zsl_top1": 0.5, "zsl_top5": 1.0, "gzsl": 1 / 6, "ausuc": 1 / 16}
    assert 0.0 <= zs["ausuc"] <= 1.0 and "AUSUC" in stdout
    assert zs["zsl"]["top5"] == 1.0  # two candidates: always among the best five
    assert set(zs["zsl_per_class"]) == set(UNSEEN) and all(v["images"] == 2 for v in zs["zsl_per_class"].values())
    for key in ("uncalibrated", "calibrated"):
        g = zs["gzsl"][key]
        assert all(0.0 <= g[k] <= 1.0 for k in ("seen", "unseen", "harmonic"))
    assert zs["gzsl"]["uncalibrated"]["gamma"] == 0.0
    assert "ZSL" in stdout and "GZSL" in stdout and "calibrated (gamma" in stdout and "zebra 1" in stdout

    # Named unseen classes; every other class of the rules is then seen.
    rc, _, _ = run(capsys, "evaluate", "--checkpoint", world["model"], "--manifest", manifest,
                   "--rules", world["rules"], "--unseen", "blue_top", "--out", out, "--overwrite", "--workers", "0",
                   "--device", "cpu")
    assert rc == 0
    zs = json.loads((out / "metrics.json").read_text())["zero_shot"]
    assert zs["unseen"] == ["blue_top"] and len(zs["seen"]) == 5 and zs["images"]["gzsl_seen"] == 10


def test_evaluate_rules_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path, world: dict[str, Path]) -> None:
    manifest = write_class_manifest(tmp_path / "data")
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes:\n  a:\n    band: middle\n")
    base = ("evaluate", "--checkpoint", world["model"], "--manifest", manifest, "--out", tmp_path / "e",
            "--workers", "0", "--device", "cpu")
    cases = [
        (("--rules", bad), f"{bad}:3: class 'a': unknown value 'middle'"),
        (("--rules", world["rules"], "--unseen", "zebra"), "--unseen: zebra not among the classes"),
        (("--rules", world["rules"], "--class-column", "species"), "no 'species' column"),
    ]
    for extra, message in cases:
        rc, _, err = run(capsys, *base, *extra)
        assert rc == 2 and err.count("\n") == 1 and message in err, (extra, err)


# --- the report glue, by hand --------------------------------------------------------------------


def test_calibration_undoes_the_collapse_onto_seen_classes() -> None:
    # Classes 0-2 are seen, 3-4 unseen; the rules only give names and columns here.
    rules = Rules.from_dict({"classes": {c: {"colour": "red"} for c in ("s0", "s1", "s2", "u0", "u1")}})
    seen, unseen = seen_and_unseen(rules, ["s0", "s1", "s2", "s1", "not_in_rules"])
    assert seen == ("s0", "s1", "s2") and unseen == ("u0", "u1")
    with pytest.raises(AttrtagError, match="unseen: x not among"):
        seen_and_unseen(rules, [], ["x"])

    def scores(labels: list[int], rng: np.random.Generator) -> LabelledScores:
        # The true class scores -1.0 for unseen images and -0.2 for seen ones; the other classes
        # -1.6, but seen classes get +0.9 everywhere (they were trained on), so every unseen
        # image goes to a seen class (-0.7 > -1.0) until gamma is between 0.35 and 1.4.
        s = np.full((len(labels), 5), -1.6) + rng.uniform(0, 0.05, (len(labels), 5))
        s[:, :3] += 0.9
        for i, y in enumerate(labels):
            s[i, y] = -1.0 if y >= 3 else -0.2
        return LabelledScores(s, np.array(labels))

    rng = np.random.default_rng(0)
    labels = [0, 1, 2, 3, 4] * 4
    report = evaluate_zero_shot(scores(labels, rng), rules, seen=seen, unseen=unseen, val=scores(labels, rng))
    assert report.zsl.top1 == 1.0  # among unseen classes only, the right one wins
    assert report.gzsl.seen == 1.0 and report.gzsl.unseen == 0.0 and report.gzsl.harmonic == 0.0
    assert report.unseen_as_seen == {"uncalibrated": 1.0, "calibrated": 0.0}
    cal = report.gzsl_calibrated
    assert cal.seen == cal.unseen == cal.harmonic == 1.0 and 0.35 < cal.gamma < 1.4
    text = format_zero_shot(report)
    assert "H   0.0%" in text and "H 100.0%" in text

    # No validation images of unseen classes: no calibration, and a note that says so.
    no_val = evaluate_zero_shot(scores(labels, rng), rules, seen=seen, unseen=unseen, val=scores([0, 1], rng))
    assert no_val.gzsl_calibrated is None and any("no calibrated GZSL" in n for n in no_val.notes)


def test_a_tag_run_checks_its_rules_against_the_schema_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from attrtag_onnx.export import export_onnx

    ckpt = make_checkpoint(tmp_path / "m.pt")
    embedded = {"classes": {"redtop": {"colour": "red", "band": "top"}, "other": {"colour": "blue"}}}
    onnx = export_onnx(ckpt, tmp_path / "m.onnx", exporter="torchscript", rules=embedded).path
    write_images(tmp_path / "imgs", 3)
    (tmp_path / "r.yaml").write_text("classes:\n  redtop: {colour: red, band: top}\n  other: {colour: blue}\n")
    checks: list[int] = []
    real = Rules._check_values
    monkeypatch.setattr(Rules, "_check_values", lambda self, schema: checks.append(1) or real(self, schema))
    for extra in (["--rules", str(tmp_path / "r.yaml")], []):  # a rules file; the model's own rules
        checks.clear()
        out = tmp_path / f"t{len(extra)}.jsonl"
        assert main(["tag", str(onnx), str(tmp_path / "imgs"), "--out", str(out), "--no-progress", *extra]) == 0
        assert len(checks) == 1, extra
    capsys.readouterr()
