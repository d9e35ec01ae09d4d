"""EMA, logit adjustment and label completion change training as they should (tiny generated set).

Each option is checked through the real loop: the EMA checkpoint holds timm's average of the
trained weights (recomputed here by hand), logit adjustment moves predictions towards rare
values, completion fills only missing labels in both regimes of the issue (labels missing at
random, one group scarce). The options travel in the checkpoint, the card and the ONNX file, and
``attrtag evaluate`` reports them.
"""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import attrtag.training.loop as loop
from attrtag.cli import main
from attrtag.data.manifest import read_manifest
from attrtag.evaluation.evaluate import evaluate
from attrtag.model import load_checkpoint, load_model
from attrtag.runtime.torch_backend import TorchPredictor
from attrtag.schema import Schema
from attrtag.training.config import TrainConfig

from tests.helpers import make_dataset

FAST = dict(backbone="test_resnet", image_size=32, batch_size=16, lr=5e-3, workers=0, warmup_epochs=0.5)


def rewrite(manifest: Path, name: str, change) -> Path:
    """A copy of ``manifest`` beside it with ``change(index, row)`` applied to every row."""
    rows = list(csv.DictReader(open(manifest)))
    out = manifest.with_name(name)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(change(i, dict(r)) for i, r in enumerate(rows))
    return out


def fit(schema_path: Path, manifest: Path, out: Path, **kw):
    schema = Schema.load(schema_path)
    return loop.train(TrainConfig.from_dict({**FAST, **kw}), schema, read_manifest(manifest, schema), out)


def test_ema_checkpoint_holds_timms_average_and_the_trained_weights_beside_it(tiny_data, tmp_path, monkeypatch):
    trained = []  # the optimizer's weights after every step
    step = loop.train_batch

    def recording(run, batch):
        out = step(run, batch)
        trained.append({k: v.detach().clone() for k, v in run.model.state_dict().items()})
        return out

    monkeypatch.setattr(loop, "train_batch", recording)
    res = fit(*tiny_data, tmp_path / "run", epochs=2, ema=True, ema_decay=0.6)
    ckpt = load_checkpoint(res.last)
    # timm's ModelEmaV3 with warm-up: decay 0 at the first step, then 1 - (1 + s)^-3/4, capped.
    ema = None
    for k, w in enumerate(trained, start=1):
        d = 0.0 if k == 1 else min(0.6, 1 - (1 + (k - 1)) ** -0.75)
        ema = {n: (v.clone() if ema is None or not v.is_floating_point() else d * ema[n] + (1 - d) * v)
               for n, v in w.items()}
    assert len(trained) == 12 and min(0.6, 1 - 12 ** -0.75) == 0.6  # the cap was reached
    for n in ema:
        assert torch.allclose(ckpt["model"][n].float(), ema[n].float(), atol=1e-5), n
        assert torch.equal(ckpt["training_model"][n], trained[-1][n]), n
    assert any(not torch.allclose(ckpt["model"][n], trained[-1][n]) for n in ema if n.endswith("weight"))
    # Validation scored the EMA, which is what the checkpoint's model (evaluate, export, tag) is.
    schema = Schema.load(tiny_data[0])
    ev = evaluate(TorchPredictor(load_model(res.last), device="cpu"), read_manifest(tiny_data[1], schema),
                  split="val", workers=0)
    for m in ev.metrics:
        assert res.history[-1][f"val_acc/{m.group}"] == m.accuracy
    assert ckpt["card"].training == {"loss": "grouped_softmax", "ema_decay": 0.6}
    assert ev.training == {"loss": "grouped_softmax", "ema_decay": 0.6}


def test_logit_adjustment_shifts_predictions_towards_rare_values(tiny_data, tmp_path):
    # Keep every 'red' training label but only one in six of the others: red is the common value.
    def skew(i, r):
        if r["split"] == "train" and r["colour"] not in ("red", "", "NA") and i % 6:
            r["colour"] = ""
        return r

    manifest = rewrite(tiny_data[1], "skewed.csv", skew)
    schema = Schema.load(tiny_data[0])
    val = read_manifest(manifest, schema)
    rare = {}
    for tau in (0.0, 1.0):
        res = fit(tiny_data[0], manifest, tmp_path / f"tau{tau}", epochs=3, logit_adjust=tau)
        counts = load_checkpoint(res.last)["card"].label_counts["colour"]
        assert counts[0] > 2 * max(counts[1:])  # red is the common value
        probs = evaluate(TorchPredictor(load_model(res.last), device="cpu"), val, split="val", workers=0)
        p = probs.predictions.probs["colour"]
        rare[tau] = (float(p[:, 1:].sum(1).mean()), float((p.argmax(1) > 0).mean()))
    assert rare[1.0][0] > rare[0.0][0] + 0.1  # more probability on green and blue
    assert rare[1.0][1] > rare[0.0][1]  # and more of them predicted


@pytest.fixture(scope="module")
def complete_labels(tmp_path_factory):
    """120 images with every label, and who they are, for the two regimes below."""
    schema, manifest = make_dataset(tmp_path_factory.mktemp("complete"), n=120, missing=0.0, seed=3)
    truth = {s.path: s.labels for s in read_manifest(manifest, Schema.load(schema)).samples}
    return schema, manifest, truth


def run_recording_fills(schema: Path, manifest: Path, out: Path, monkeypatch, epochs: int = 6):
    """Train with EMA completion; returns the history and ``(train sample, targets, filled)`` per step."""
    seen, fills = {}, []
    step, fill = loop.train_batch, loop.fill_labels

    def batch_indices(run, batch):
        seen["run"], seen["indices"] = run, batch.indices.tolist()
        return step(run, batch)

    def recording(criterion, logits, targets, **options):
        filled = fill(criterion, logits, targets, **options)
        samples = [seen["run"].train_samples[i] for i in seen["indices"]]
        fills.append((samples, targets.clone(), {g: (p.clone(), w.clone()) for g, (p, w) in filled.items()}))
        return filled

    monkeypatch.setattr(loop, "train_batch", batch_indices)
    monkeypatch.setattr(loop, "fill_labels", recording)
    res = fit(schema, manifest, out, epochs=epochs, ema=True, ema_decay=0.9, complete="hard", complete_threshold=0.6,
              complete_start=epochs - 4.0)
    return res.history, fills


def filled_per_group(schema: Schema, fills, truth) -> dict[str, tuple[int, int]]:
    """``{group: (labels filled, of them equal to the hidden true label)}``; checks none was given."""
    out = {}
    for j, g in enumerate(schema.names):
        n = right = 0
        for samples, targets, filled in fills:
            probs, w = filled[g]
            assert not torch.any((w > 0) & (targets[:, j] >= 0)), "a given label was overridden"
            for b in torch.nonzero(w > 0).flatten().tolist():
                n += 1
                right += int(probs[b].argmax()) == truth[samples[b].path][j]
        out[g] = (n, right)
    return out


def test_completion_with_labels_missing_at_random(complete_labels, tmp_path, monkeypatch):
    schema_path, manifest, truth = complete_labels
    rnd = random.Random(0)

    def half(i, r):
        for g in ("colour", "shape", "band"):
            if r["split"] == "train" and rnd.random() < 0.5:
                r[g] = ""
        return r

    history, fills = run_recording_fills(schema_path, rewrite(manifest, "mar.csv", half), tmp_path, monkeypatch)
    schema = Schema.load(schema_path)
    per = filled_per_group(schema, fills, truth)
    assert [h["filled/colour"] for h in history[:2]] == [0, 0]  # the teacher learns first (complete_start 2)
    assert sum(h["filled/colour"] for h in history) == per["colour"][0]
    n, right = per["colour"]
    assert n >= 20 and right / n >= 0.85  # confident fills of a learnable group are right
    assert history[-1]["filled/colour"] >= history[2]["filled/colour"]  # the curriculum fills more later


def test_completion_with_one_group_scarce(complete_labels, tmp_path, monkeypatch):
    schema_path, manifest, truth = complete_labels
    scarce = rewrite(manifest, "scarce.csv", lambda i, r: {**r, "band": r["band"] if r["split"] != "train" or i % 10 == 0
                                                              else ""})
    history, fills = run_recording_fills(schema_path, scarce, tmp_path, monkeypatch, epochs=4)
    per = filled_per_group(Schema.load(schema_path), fills, truth)
    # Only the scarce group misses labels, so every filled label is one of its own.
    assert per["band"][0] > 0 and per["colour"][0] == per["shape"][0] == 0
    assert sum(h["filled/band"] for h in history) == per["band"][0]


def test_options_travel_in_checkpoint_card_and_onnx_and_evaluate_reports_them(tiny_data, tmp_path, capsys):
    schema_path, manifest = tiny_data
    out = tmp_path / "run"
    assert main(["train", "--schema", str(schema_path), "--manifest", str(manifest), "--out", str(out),
                 "--backbone", "test_resnet", "--image-size", "32", "--epochs", "2", "--workers", "0",
                 "--ema", "--ema-decay", "0.95", "--logit-adjust", "0.5", "--complete", "soft",
                 "--complete-threshold", "0.7", "--complete-start", "1", "--complete-weight", "0.5",
                 "--group-balance", "log", "--loss", "grouped_softmax"]) == 0
    ckpt = load_checkpoint(out / "last.pt")
    options = {"loss": "grouped_softmax", "ema_decay": 0.95, "logit_adjust": 0.5, "complete": "soft",
               "complete_threshold": 0.7, "complete_start": 1.0, "complete_weight": 0.5, "group_balance": "log"}
    assert {k: ckpt["config"][k] for k in options if k != "ema_decay"} == {k: v for k, v in options.items()
                                                                          if k != "ema_decay"}
    assert ckpt["config"]["ema"] is True and ckpt["card"].training == options
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out / "last.pt"), "--manifest", str(manifest), "--workers", "0",
                 "--device", "cpu", "--out", str(tmp_path / "ev")]) == 0
    printed = capsys.readouterr().out
    assert "trained with: loss grouped_softmax, ema_decay 0.95, logit_adjust 0.5, complete soft" in printed
    assert "the weights are the EMA" in printed
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["training"] == options

    from attrtag.runtime.onnx_backend import OnnxModel
    from attrtag_onnx.export import export_onnx

    onnx_path = tmp_path / "model.onnx"
    export_onnx(out / "last.pt", onnx_path)  # checked against the checkpoint's weights: the EMA's
    model = OnnxModel(onnx_path, device="cpu", threads=1)
    assert dict(model.card.training) == options
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    onnx_probs = model(x)
    trained = load_model(out / "last.pt")
    trained.load_state_dict(ckpt["training_model"])
    with torch.no_grad():
        raw = {g: torch.softmax(v, 1).numpy() for g, v in trained.eval()(torch.from_numpy(x)).items()}
    ema = TorchPredictor(load_model(out / "last.pt"), device="cpu")(x)
    for g in onnx_probs:
        assert np.allclose(onnx_probs[g], ema[g], atol=1e-4)
    assert max(np.abs(onnx_probs[g] - raw[g]).max() for g in raw) > 1e-3  # not the optimizer's weights


def test_bad_option_values_and_combinations_are_one_line_errors(tiny_data, tmp_path, capsys):
    schema_path, manifest = tiny_data
    base = ["train", "--schema", str(schema_path), "--manifest", str(manifest), "--out", str(tmp_path / "r"),
            "--workers", "0", "--epochs", "1"]
    cases = [
        (["--complete", "hard"], "--complete hard needs --ema"),
        (["--ema", "--ema-decay", "1.5"], "--ema-decay 1.5: must be in [0, 1)"),
        (["--logit-adjust", "-1"], "--logit-adjust -1.0: must be at least 0"),
        (["--ema", "--complete", "soft", "--complete-threshold", "0"], "--complete-threshold 0.0: must be in (0, 1]"),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, (extra, err)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("complete: hard\n")
    assert main(base + ["--config", str(cfg)]) == 2
    assert f"{cfg} with the options given: --complete hard needs --ema" in capsys.readouterr().err
    assert not (tmp_path / "r" / "last.pt").exists()
    from attrtag.api import train_config
    from attrtag.cli import build_parser
    from attrtag.commands.train import training_options

    args = build_parser().parse_args(base + ["--config", str(cfg), "--ema"])
    cfg_read = train_config(args.config, **training_options(args))
    assert cfg_read.complete == "hard" and cfg_read.ema  # flags complete the file
