"""Multi-label groups on the command line: train, evaluate, refit thresholds, decide values when tagging."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from attrtag.model import load_checkpoint
from attrtag.tagging import read_output
from tests.helpers import make_checkpoint, run_cli as run, train_multilabel


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return train_multilabel(tmp_path_factory.mktemp("multi-cli"), 100)


def test_evaluate_reports_the_multi_label_figures(trained, capsys) -> None:
    code, out, _ = run(capsys, "evaluate", "--model", trained["best"], "--manifest", trained["manifest"],
                       "--split", "val", "--workers", "0", "--out", trained["dir"] / "eval")
    assert code == 0 and "marks: mAP" in out and "micro-F1" in out and "mA" in out
    groups = {g["group"]: g for g in json.loads((trained["dir"] / "eval" / "metrics.json").read_text())["groups"]}
    marks = groups["marks"]
    assert marks["kind"] == "multi" and [v["value"] for v in marks["values"]] == ["dot", "bar", "ring"]
    assert all({"ap", "f1", "threshold", "tp", "fp", "fn", "positives", "negatives"} <= set(v) for v in marks["values"])
    assert (trained["dir"] / "eval" / "values_marks.png").stat().st_size > 0


def test_calibrate_refits_the_thresholds_and_tag_decides_with_them_or_with_overrides(trained, capsys, tmp_path) -> None:
    out = tmp_path / "refit.pt"
    code, text, _ = run(capsys, "calibrate", trained["best"], "--manifest", trained["manifest"], "--thresholds",
                        "--out", out, "--workers", "0", "--device", "cpu")
    assert code == 0 and "value thresholds chosen on manifest.csv, split val" in text and "threshold" in text
    card = load_checkpoint(out)["card"]
    assert card.value_thresholds["chosen_on"].startswith("manifest.csv, split val")
    assert load_checkpoint(trained["best"])["card"].value_thresholds != card.value_thresholds  # the model is unchanged
    tags = tmp_path / "tags.jsonl"
    code, _, err = run(capsys, "tag", out, trained["images"], "--out", tags, "--no-progress", "--device", "cpu",
                       "--threshold", "marks=1.0", "--threshold", "marks.dot=0.0")
    assert code == 0, err
    meta, records = read_output(tags)
    assert all(r["marks"] == ["dot"] for r in records) and set(records[0]["marks_probs"]) == {"dot", "bar", "ring"}
    assert meta.to_dict()["value_thresholds"] == {"marks": {"dot": 0.0, "bar": 1.0, "ring": 1.0}}
    code, _, err = run(capsys, "tag", out, trained["images"], "--out", tmp_path / "t2.jsonl", "--threshold",
                       "marks.purple=0.2")
    assert code == 2 and err.count("\n") == 1
    assert "--threshold marks.purple: the multi-label group 'marks' has no value 'purple'" in err


def test_refitting_thresholds_of_a_model_without_a_multi_label_group_is_refused(tiny_data, capsys, tmp_path) -> None:
    ckpt = make_checkpoint(tmp_path / "plain.pt")
    code, _, err = run(capsys, "calibrate", ckpt, "--manifest", tiny_data[1], "--thresholds", "--out",
                       tmp_path / "x.pt", "--device", "cpu")
    assert code == 2 and err.count("\n") == 1 and "--thresholds: the model has no multi-label group" in err


def test_train_says_where_the_thresholds_were_chosen_and_which_values_kept_the_default(trained, tiny_data,
                                                                                        tmp_path) -> None:
    from attrtag.commands.train import describe_value_thresholds

    note = describe_value_thresholds(trained["best"])
    assert note.startswith("value thresholds: best F1 per value on the val split, 20 images, epoch")
    card = load_checkpoint(trained["best"])["card"]
    kept = [f"marks.{v}" for v in card.value_thresholds["fallback"].get("marks", [])]
    assert (f"kept at 0.5 (fewer than 5 labelled positives): {', '.join(kept)}" in note) == bool(kept)
    assert describe_value_thresholds(make_checkpoint(tmp_path / "plain.pt")) is None  # no multi-label group
