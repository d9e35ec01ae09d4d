"""Training behaviour on a tiny generated image set: learning, resume, bad images, bad options."""
import json
import shutil

import pytest
import torch

from attrtag.model import load_checkpoint
from attrtag.cli import main
from attrtag.training.config import TrainConfig
from attrtag.errors import AttrtagError
from attrtag.data.manifest import label_counts, read_manifest
from attrtag.schema import Schema
from attrtag.training.loop import train

FAST = dict(backbone="test_resnet", image_size=32, batch_size=16, lr=3e-3, workers=0, warmup_epochs=0.5)


def run(tiny_data, out, *, resume=None, on_epoch=None, **kw):
    schema_path, manifest_path = tiny_data
    schema = Schema.load(schema_path)
    cfg = TrainConfig.from_dict({**FAST, **kw})
    return train(cfg, schema, read_manifest(manifest_path, schema), out, resume=resume, on_epoch=on_epoch)


class Killed(Exception):
    pass


def kill_after(n):
    def on_epoch(row, metrics):
        if row["epoch"] == n:
            raise Killed
    return on_epoch


def test_run_folder_contents_and_safe_checkpoint(tiny_data, tmp_path):
    res = run(tiny_data, tmp_path / "run", epochs=2)
    for name in ("last.pt", "best.pt", "history.json", "history.csv", "curves.png"):
        assert (tmp_path / "run" / name).stat().st_size > 0, name
    ckpt = load_checkpoint(res.last)  # weights_only=True inside
    card = ckpt["card"]
    assert ckpt["epoch"] == 1 and card.backbone == "test_resnet"
    assert card.schema == Schema.load(tiny_data[0])
    schema = Schema.load(tiny_data[0])
    train_samples = read_manifest(tiny_data[1], schema).split("train")
    assert card.label_counts == label_counts(schema, train_samples)  # the priors travel with the model
    assert sum(card.label_counts["colour"]) == sum(s.labels[0] >= 0 for s in train_samples) > 0
    assert card.preprocessing.input_size == (32, 32) and "optimizer" in ckpt
    hist = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2]
    assert hist[-1]["val_n/colour"] > 0 and 0 <= hist[-1]["val_acc/colour"] <= 1
    assert not list((tmp_path / "run").glob(".*tmp"))  # no leftovers of atomic writes


def test_learns_the_colour_group(tiny_data, tmp_path):
    res = run(tiny_data, tmp_path / "run", epochs=6, lr=5e-3)
    first, last = res.history[0], res.history[-1]
    assert last["train_loss"] < first["train_loss"]
    assert last["val_acc/colour"] >= 0.8  # majority baseline is ~0.4


# Every option that changes what is learnt, on: the EMA and what it filled in must resume too.
COMPLETE = dict(ema=True, ema_decay=0.9, complete_start=1.0, complete_threshold=0.4)
RESUME_OPTIONS = {
    "plain": {},
    "ema+soft completion+logit adjustment+balance": dict(COMPLETE, complete="soft", logit_adjust=1.0,
                                                         group_balance="log", class_weights=True),
    "sigmoid+ema+hard completion+logit adjustment": dict(COMPLETE, complete="hard", loss="sigmoid_bce",
                                                         logit_adjust=0.5),
    "layer decay+head epochs": dict(layer_decay=0.5, head_epochs=1.0),
}


@pytest.mark.parametrize("options", RESUME_OPTIONS.values(), ids=RESUME_OPTIONS.keys())
def test_resume_reproduces_the_uninterrupted_run(tiny_data, tmp_path, options):
    straight = run(tiny_data, tmp_path / "a", epochs=3, **options)
    with pytest.raises(Killed):  # the same 3-epoch run, killed after its first epoch
        run(tiny_data, tmp_path / "b", epochs=3, on_epoch=kill_after(1), **options)
    resumed = run(tiny_data, tmp_path / "b", epochs=3, resume=tmp_path / "b" / "last.pt")
    ca, cb = load_checkpoint(straight.last), load_checkpoint(resumed.last)
    assert ca.keys() == cb.keys() and ("training_model" in ca) == bool(options.get("ema"))
    for key in ("model", "training_model") if "training_model" in ca else ("model",):
        for k in ca[key]:
            assert torch.allclose(ca[key][k].float(), cb[key][k].float(), atol=1e-6), (key, k)
    assert [h["train_loss"] for h in straight.history] == pytest.approx([h["train_loss"] for h in resumed.history], abs=1e-6)
    filled = [{k: v for k, v in h.items() if k.startswith("filled/")} for h in straight.history]
    assert filled == [{k: v for k, v in h.items() if k.startswith("filled/")} for h in resumed.history]
    if options.get("complete"):
        assert sum(sum(f.values()) for f in filled[1:]) > 0  # labels were filled after the resume point
    assert cb["card"].training == TrainConfig.from_dict({**FAST, **options}).learning_options()


def test_resume_with_a_different_schema_is_refused(tiny_data, tmp_path):
    run(tiny_data, tmp_path / "r", epochs=1, max_steps_per_epoch=1)
    other = tmp_path / "other.yaml"
    other.write_text("groups:\n  colour: [red, blue, green]\n  shape: [s0, s1, s2, s3, s4, s5, s6]\n  band: [top, bottom]\n")
    code = main(["train", "--schema", str(other), "--manifest", str(tiny_data[1]), "--out", str(tmp_path / "r"),
                 "--resume", "--epochs", "2", "--workers", "0"])
    assert code == 2


def test_corrupt_training_images_are_skipped_and_counted(tiny_data, tmp_path):
    schema_path, manifest_path = tiny_data
    data = tmp_path / "copy"
    shutil.copytree(manifest_path.parent, data)
    bad = sorted((data / "img").glob("*.png"))[1:4]  # three training images
    bad[0].write_bytes(b"")
    bad[1].write_bytes(bad[1].read_bytes()[:60])
    bad[2].write_text("not an image")
    res = run((data / "schema.yaml", data / "manifest.csv"), tmp_path / "run", epochs=1)
    assert len(res.failed_images) == 3 and res.history[0]["skipped_images"] == 3


def test_cli_errors_are_one_line_with_exit_2(tiny_data, tmp_path, capsys):
    schema_path, manifest_path = tiny_data
    code = main(["train", "--schema", str(schema_path), "--manifest", str(manifest_path), "--out", str(tmp_path / "x"),
                 "--backbone", "vit_tiny_patch16_224", "--image-size", "40", "--epochs", "1", "--workers", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--image-size 40x40" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("groups:\n  colour: [red]\ncolours: 1\n")
    assert main(["train", "--schema", str(bad), "--manifest", str(manifest_path), "--out", str(tmp_path / "y")]) == 2
    assert f"{bad}:3: unknown top-level key 'colours'" in capsys.readouterr().err
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("epochs: 1\nlearning_rate: 0.1\n")
    assert main(["train", "--schema", str(schema_path), "--manifest", str(manifest_path), "--out", str(tmp_path / "z"),
                 "--config", str(cfg)]) == 2
    assert f"{cfg}:2: unknown config key 'learning_rate'" in capsys.readouterr().err
    with pytest.raises(AttrtagError, match="no usable CUDA GPU"):
        from attrtag.runtime.torch_backend import torch_device

        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
        torch_device("cuda")


def test_cli_train_then_evaluate_reports_denominators(tiny_data, tmp_path, capsys):
    schema_path, manifest_path = tiny_data
    out = tmp_path / "run"
    assert main(["train", "--schema", str(schema_path), "--manifest", str(manifest_path), "--out", str(out),
                 "--backbone", "test_resnet", "--image-size", "32", "--epochs", "1", "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert "label coverage per group" in printed and "colour" in printed
    card = load_checkpoint(out / "best.pt")["card"]
    said = next(line for line in printed.splitlines() if line.startswith("temperatures (fitted on the val split"))
    assert all(f"{g} {t:.2f}" in said for g, t in card.group_temperatures.items()) and card.group_temperatures
    assert main(["evaluate", "--checkpoint", str(out / "best.pt"), "--manifest", str(manifest_path),
                 "--split", "val", "--workers", "0", "--out", str(tmp_path / "ev")]) == 0
    report = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    n_val = sum(1 for r in read_manifest(manifest_path, Schema.load(schema_path)).samples if r.split == "val")
    for g in report["groups"]:
        assert 0 < g["labelled"] <= n_val and (tmp_path / "ev" / g["confusion_png"]).exists()
        assert sum(map(sum, g["confusion"])) == g["labelled"]
