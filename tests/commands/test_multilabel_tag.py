"""``attrtag tag`` end to end with a multi-label model: trained for one epoch on the ``marks`` image set,
exported, tagged into every format, thresholds overridden, re-scored by ``attrtag classify``.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from attrtag.cli import main
from attrtag.runtime import read_card
from attrtag.tagging import CLASS_FIELDS, read_output
from tests.helpers import MARKS, MULTI_SCHEMA, run_cli as run, train_multilabel

RULES = "classes:\n  redtop: {colour: red, band: top}\n  bluebottom: {colour: blue, band: bottom}\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One epoch on 120 images, the checkpoint exported to ONNX, and class rules over the exclusive groups."""
    d = tmp_path_factory.mktemp("multi_tag")
    train_multilabel(d, 120, epochs=1)
    assert main(["export", "--checkpoint", str(d / "run" / "best.pt"), "--out", str(d / "m.onnx"),
                 "--batch-check", "2"]) == 0
    (d / "rules.yaml").write_text(RULES)
    (d / "data" / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut")
    return {"dir": d, "ckpt": d / "run" / "best.pt", "onnx": d / "m.onnx", "images": d / "data" / "img",
            "rules": d / "rules.yaml"}


def decided(record: dict, cuts: dict[str, float]) -> list[str]:
    """The values a record should list: those at or above their threshold, in schema order."""
    return [v for v in MARKS if record["marks_probs"][v] >= cuts[v]]


@pytest.mark.parquet
def test_tag_writes_the_marks_at_the_cards_thresholds_in_every_format(
    capsys: pytest.CaptureFixture[str], trained: dict[str, Path]
) -> None:
    card = read_card(trained["onnx"])
    assert card.schema == MULTI_SCHEMA and card.value_thresholds is not None
    cuts = dict(zip(MARKS, card.decision_thresholds["marks"]))
    got = {}
    for fmt in ("jsonl", "csv", "parquet"):
        out = trained["dir"] / f"tags.{fmt}"
        rc, stdout, _ = run(capsys, "tag", trained["onnx"], trained["images"], "--out", out,
                            "--rules", trained["rules"], "--workers", "1", "--no-progress")
        assert rc == 0 and "tagged 120, failed 1 (not_image 1)" in stdout
        meta, got[fmt] = read_output(out)
        assert meta.layout.value_thresholds == card.decision_thresholds
    assert got["jsonl"] == got["csv"] == got["parquet"]
    tagged = [r for r in got["jsonl"] if "error" not in r]
    assert len(tagged) == 120
    for r in tagged:
        assert r["marks"] == decided(r, cuts) and list(r["marks_probs"]) == list(MARKS) and "marks_prob" not in r
        assert r["class"] in ("redtop", "bluebottom", "unknown")
    assert 0 < sum(len(r["marks"]) for r in tagged) < 3 * 120  # the thresholds decide: neither none nor all


def test_value_thresholds_are_overridden_and_a_resume_with_others_is_refused(
    capsys: pytest.CaptureFixture[str], trained: dict[str, Path]
) -> None:
    out = trained["dir"] / "override.jsonl"
    argv = ["tag", trained["onnx"], trained["images"], "--out", out, "--workers", "1", "--no-progress"]
    assert run(capsys, *argv, "--threshold", "marks=0.9", "--threshold", "marks.dot=0.05")[0] == 0
    cuts = {"dot": 0.05, "bar": 0.9, "ring": 0.9}
    meta, records = read_output(out)
    assert meta.layout.value_thresholds == {"marks": (0.05, 0.9, 0.9)}
    assert all(r["marks"] == decided(r, cuts) for r in records if "error" not in r)
    rc, _, err = run(capsys, *argv, "--threshold", "marks=0.9")
    assert rc == 2 and err.count("\n") == 1 and "written with value --threshold" in err and "--overwrite" in err
    rc, _, err = run(capsys, *argv, "--threshold", "marks.spot=0.5")
    assert rc == 2 and "marks.spot" in err


@pytest.mark.parametrize("threshold, said", [
    ("colour.red=0.5", "--threshold colour.red: 'colour' is an exclusive group"),
    ("marks.spot=0.5", "marks.spot: the multi-label group 'marks' has no value 'spot' (values: dot, bar, ring)"),
    ("marks.dot=1.5", "--threshold marks.dot=1.5: a threshold is a probability between 0 and 1"),
    ("size.dot=0.5", "--threshold size.dot: the model has no group 'size.dot'"),
    ("marks.dot=high", "--threshold"),
])
def test_a_bad_value_threshold_is_one_line_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], trained: dict[str, Path], threshold: str, said: str
) -> None:
    out = trained["dir"] / "bad.jsonl"
    rc, _, err = run(capsys, "tag", trained["onnx"], trained["images"], "--out", out, "--threshold", threshold,
                     "--no-progress")
    assert rc == 2 and err.count("\n") == 1 and said in err, err
    assert not out.exists() and not (trained["dir"] / "bad.jsonl.meta.json").exists()


@pytest.mark.parquet
def test_classify_on_a_multi_label_tag_file_reproduces_tag(
    capsys: pytest.CaptureFixture[str], trained: dict[str, Path]
) -> None:
    d = trained["dir"]
    plain = d / "plain.csv"
    assert run(capsys, "tag", trained["onnx"], trained["images"], "--out", plain, "--workers", "1", "--no-progress",
               "--rules", trained["rules"], "--no-priors")[0] == 0
    bare = d / "bare.jsonl"
    assert run(capsys, "tag", trained["onnx"], trained["images"], "--out", bare, "--workers", "1", "--no-progress",
               "--no-rules")[0] == 0
    out = d / "classified.parquet"
    rc, stdout, _ = run(capsys, "classify", bare, "--rules", trained["rules"], "--no-priors", "--out", out)
    assert rc == 0 and "scored 120 image(s)" in stdout and "1 failed image(s) kept" in stdout
    _, want = read_output(plain)
    _, got = read_output(out)
    assert got == want  # the group fields as tagged, marks included, and the same class fields
    assert all(set(CLASS_FIELDS) <= set(r) for r in got if "error" not in r)


def test_a_checkpoint_tags_what_its_onnx_export_tags(
    capsys: pytest.CaptureFixture[str], trained: dict[str, Path]
) -> None:
    outs = {}
    for name in ("ckpt", "onnx"):
        outs[name] = trained["dir"] / f"{name}.jsonl"
        assert run(capsys, "tag", trained[name], trained["images"], "--out", outs[name], "--workers", "1",
                   "--no-progress", "--no-rules")[0] == 0
    a, b = (read_output(outs[n])[1] for n in ("ckpt", "onnx"))
    assert [r["path"] for r in a] == [r["path"] for r in b]
    for ra, rb in zip(a, b):
        if "error" not in ra:
            assert ra["marks_probs"] == pytest.approx(rb["marks_probs"], abs=1e-5)
    same = sum(ra.get("marks") == rb.get("marks") for ra, rb in zip(a, b))
    assert same >= len(a) - 1  # a value within 1e-5 of its threshold may flip, nothing more
