"""``attrtag evaluate`` and ``attrtag.evaluate`` score held-out images unless told otherwise, and say which."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import attrtag
from attrtag.cli import main
from attrtag.errors import AttrtagError

from tests.helpers import make_checkpoint, make_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """A random checkpoint (no training needed here) and manifests with and without test/val rows."""
    root = tmp_path_factory.mktemp("evaluate")
    _, manifest = make_dataset(root, n=30, missing=0.0, seed=2)  # splits: 24 train, 6 val
    rows = list(csv.DictReader(open(manifest)))
    out = {"ckpt": make_checkpoint(root / "model.pt"), "train_val": manifest}
    variants = {
        "with_test": [dict(r, split="test" if i % 10 == 1 else r["split"]) for i, r in enumerate(rows)],
        "train_only": [dict(r, split="train") for r in rows],
        "no_split": [{k: v for k, v in r.items() if k != "split"} for r in rows],
    }
    for name, rs in variants.items():
        path = root / f"{name}.csv"
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rs[0]))
            w.writeheader()
            w.writerows(rs)
        out[name] = path
    return out


def evaluate_cli(capsys, data, manifest: str, tmp_path: Path, *extra: str) -> tuple[int, str, str, dict]:
    out = tmp_path / manifest
    code = main(["evaluate", "--checkpoint", str(data["ckpt"]), "--manifest", str(data[manifest]), "--out", str(out),
                 "--workers", "0", "--device", "cpu", "--overwrite", *extra])
    captured = capsys.readouterr()
    report = json.loads((out / "metrics.json").read_text()) if code == 0 else {}
    return code, captured.out, captured.err, report


def test_default_is_the_test_split_else_val_and_says_which(data, tmp_path, capsys):
    code, printed, _, report = evaluate_cli(capsys, data, "with_test", tmp_path)
    assert code == 0 and "evaluated 3 image(s)" in printed and "the held-out test split" in printed
    assert report["split"] == "test" and report["images"] == 3 and report["includes_training_images"] is False
    code, printed, _, report = evaluate_cli(capsys, data, "train_val", tmp_path)
    assert code == 0 and "evaluated 6 image(s)" in printed and "the val split (no test rows" in printed
    assert report["split"] == "val" and report["images"] == 6
    assert "trained with: not recorded" in printed and report["training"] is None  # a model from before


def test_training_images_only_when_asked_and_the_report_says_so(data, tmp_path, capsys):
    code, printed, _, report = evaluate_cli(capsys, data, "with_test", tmp_path, "--split", "all")
    assert code == 0 and "evaluated 30 image(s)" in printed
    assert "note: these figures include training images" in printed
    assert report["includes_training_images"] is True and "from the train split" in report["split_note"]
    code, printed, _, report = evaluate_cli(capsys, data, "with_test", tmp_path, "--split", "train")
    assert code == 0 and report["split"] == "train" and report["includes_training_images"] is True
    assert "the model was trained on these images" in printed


@pytest.mark.parametrize("manifest", ["train_only", "no_split"])
def test_no_held_out_rows_is_a_one_line_error_pointing_to_split_all(data, tmp_path, capsys, manifest):
    code, _, err, _ = evaluate_cli(capsys, data, manifest, tmp_path)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{data[manifest]}: no 'test' or 'val' rows" in err and "--split all" in err
    assert not (tmp_path / manifest).exists()  # nothing written
    code, printed, _, report = evaluate_cli(capsys, data, manifest, tmp_path, "--split", "all")
    assert code == 0 and report["images"] == 30 and report["includes_training_images"] is True


def test_the_python_api_has_the_same_default(data):
    ev = attrtag.evaluate(data["ckpt"], data["with_test"], workers=0, device="cpu")
    assert ev.split == "test" and len(ev.predictions.samples) == 3 and not ev.includes_training
    ev = attrtag.evaluate(data["ckpt"], data["with_test"], split="all", workers=0, device="cpu")
    assert ev.split == "all" and len(ev.predictions.samples) == 30 and ev.includes_training
    with pytest.raises(AttrtagError, match="no 'test' or 'val' rows"):
        attrtag.evaluate(data["ckpt"], data["no_split"], workers=0, device="cpu")
    with pytest.raises(AttrtagError, match="split 'holdout' is not one of train, val, test, all"):
        attrtag.evaluate(data["ckpt"], data["with_test"], split="holdout", workers=0, device="cpu")


def test_a_report_is_replaced_only_with_overwrite(data, tmp_path, capsys):
    code, _, _, first = evaluate_cli(capsys, data, "with_test", tmp_path)
    argv = ["evaluate", "--checkpoint", str(data["ckpt"]), "--manifest", str(data["with_test"]), "--out",
            str(tmp_path / "with_test"), "--workers", "0", "--device", "cpu", "--split", "all"]
    assert code == 0 and main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds metrics.json; pass --overwrite" in err
    assert json.loads((tmp_path / "with_test" / "metrics.json").read_text()) == first  # untouched
