"""Calibrated probabilities end to end: training fits a temperature per group on val, tag, evaluate
and calibrate --temperature use it, --no-calibration gives the raw probabilities."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import attrtag
from attrtag.data.manifest import Manifest, read_manifest
from attrtag.errors import AttrtagError
from attrtag.evaluation.evaluate import compute_metrics, predict
from attrtag.evaluation.multilabel import choose_thresholds
from attrtag.evaluation.temperature import fit_temperatures, group_eces
from attrtag.model import load_checkpoint
from attrtag.runtime import open_predictor
from attrtag.runtime.temperature import apply_temperatures
from attrtag.schema import Schema
from attrtag.tagging import read_output
from tests.helpers import MULTI_SCHEMA, run_cli as run, train_multilabel


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from attrtag_onnx.export import export_onnx

    t = train_multilabel(tmp_path_factory.mktemp("temps-cli"), 100)
    return {**t, "onnx": export_onnx(t["dir"] / "run" / "last.pt", t["dir"] / "last.onnx", exporter="torchscript").path}


def val_predictions(model: Path, manifest: Path, *, calibrated: bool):
    predictor = open_predictor(model, device="cpu", calibrated=calibrated)
    return predictor, predict(predictor, read_manifest(manifest, MULTI_SCHEMA).split("val"), workers=0)


def test_training_fits_each_groups_temperature_on_val_and_keeps_accuracy(trained) -> None:
    last = trained["dir"] / "run" / "last.pt"
    card = load_checkpoint(last)["card"]
    row = json.loads((trained["dir"] / "run" / "history.json").read_text())[-1]
    predictor, raw = val_predictions(last, trained["manifest"], calibrated=False)
    assert card.temperatures["fitted_on"] == f"the val split, {len(raw.samples)} images, epoch 2"
    # The temperatures of these weights, fitted on these images' raw probabilities.
    assert card.temperatures == fit_temperatures(MULTI_SCHEMA, raw.probs, raw.targets, fitted_on=card.temperatures[
        "fitted_on"])
    assert set(card.group_temperatures) == {"colour", "shape", "band", "marks"}
    calibrated = replace(raw, probs=apply_temperatures(raw.probs, MULTI_SCHEMA, card.group_temperatures))
    eces = group_eces(MULTI_SCHEMA, calibrated.probs, calibrated.targets)
    assert {g: row[f"val_ece/{g}"] for g in eces} == pytest.approx(eces)
    # Accuracy and macro-F1 of the exclusive groups are those of the raw argmax: T keeps it.
    for m in compute_metrics(MULTI_SCHEMA, raw)[:3]:
        assert (row[f"val_acc/{m.group}"], row[f"val_f1/{m.group}"]) == pytest.approx((m.accuracy, m.macro_f1))
    # The thresholds were chosen on the calibrated probabilities.
    chosen = choose_thresholds(MULTI_SCHEMA, calibrated.probs, calibrated.targets, chosen_on=card.temperatures["fitted_on"])
    assert card.value_thresholds == chosen


def test_no_val_images_no_temperatures(trained, tmp_path) -> None:
    schema = Schema.load(trained["schema"])
    manifest = read_manifest(trained["manifest"], schema)
    only_train = Manifest(source=manifest.source, schema=schema,
                          samples=[replace(s, split="train") for s in manifest.samples][:40])
    run_ = attrtag.train(schema, only_train, tmp_path / "run", backbone="test_resnet", image_size=32, epochs=1,
                         batch_size=16, workers=0, device="cpu")
    assert load_checkpoint(run_.last)["card"].temperatures is None
    assert not any(k.startswith("val_ece/") for k in run_.history[-1])


def test_tag_writes_calibrated_probabilities_and_no_calibration_the_raw_ones(trained, capsys, tmp_path) -> None:
    calibrated, raw = tmp_path / "cal.jsonl", tmp_path / "raw.jsonl"
    for out, extra in ((calibrated, ()), (raw, ("--no-calibration",))):
        code, _, err = run(capsys, "tag", trained["onnx"], trained["images"], "--out", out, "--no-progress",
                           "--device", "cpu", *extra)
        assert code == 0, err
    (meta_c, rec_c), (meta_r, rec_r) = read_output(calibrated), read_output(raw)
    card = load_checkpoint(trained["dir"] / "run" / "last.pt")["card"]
    assert meta_c.to_dict()["temperatures"] == card.group_temperatures and "temperatures" not in meta_r.to_dict()
    probs = {g: np.array([[r[f"{g}_probs"][v] for v in MULTI_SCHEMA[g].values] for r in rec_r])
             for g in MULTI_SCHEMA.names}
    expected = apply_temperatures(probs, MULTI_SCHEMA, card.group_temperatures)
    for g in MULTI_SCHEMA.names:
        got = np.array([[r[f"{g}_probs"][v] for v in MULTI_SCHEMA[g].values] for r in rec_c])
        assert np.allclose(got, expected[g], atol=2e-5), g
    assert [r["colour"] for r in rec_c] == [r["colour"] for r in rec_r]
    # A calibrated output is not resumed with raw probabilities (nor the reverse).
    code, _, err = run(capsys, "tag", trained["onnx"], trained["images"], "--out", calibrated, "--no-progress",
                       "--device", "cpu", "--no-calibration")
    assert code == 2 and err.count("\n") == 1 and "was written with temperatures" in err, err


def test_evaluate_prints_the_ece_raw_and_calibrated_and_draws_a_diagram_per_group(trained, capsys, tmp_path) -> None:
    out = tmp_path / "eval"
    code, text, err = run(capsys, "evaluate", "--model", trained["onnx"], "--manifest", trained["manifest"],
                          "--split", "val", "--workers", "0", "--device", "cpu", "--out", out)
    assert code == 0, err
    assert "ECE raw" in text and "ECE calibrated" in text and "4 reliability diagram(s)" in text
    predictor, raw = val_predictions(trained["onnx"], trained["manifest"], calibrated=False)
    calibrated = apply_temperatures(raw.probs, MULTI_SCHEMA, predictor.card.group_temperatures)
    groups = {g["group"]: g for g in json.loads((out / "metrics.json").read_text())["groups"]}
    for name, ece in group_eces(MULTI_SCHEMA, raw.probs, raw.targets).items():
        assert groups[name]["ece_raw"] == pytest.approx(ece) and groups[name]["ece_bins"] == 15
        assert groups[name]["temperature"] == predictor.card.group_temperatures[name]
        assert (out / groups[name]["reliability_png"]).stat().st_size > 0
    assert {g: groups[g]["ece_calibrated"] for g in groups} == pytest.approx(
        group_eces(MULTI_SCHEMA, calibrated, raw.targets))
    assert groups["colour"]["accuracy"] == pytest.approx(compute_metrics(MULTI_SCHEMA, raw)[0].accuracy)


@pytest.mark.parametrize("kind", ["onnx", "pt"])
def test_calibrate_temperature_refits_on_the_manifest_and_keeps_every_decision(trained, capsys, tmp_path,
                                                                                 kind: str) -> None:
    src = trained["onnx"] if kind == "onnx" else trained["dir"] / "run" / "last.pt"
    # Another val split (every third row, beside the images): other temperatures than training's.
    rows = trained["manifest"].read_text().splitlines()
    manifest = trained["manifest"].parent / f"refit_{kind}.csv"
    manifest.write_text("\n".join([rows[0]] + [r.replace(",train", ",val") if i % 3 == 0 else r.replace(",val", ",train")
                                               for i, r in enumerate(rows[1:])]) + "\n")
    out = tmp_path / f"refit.{'onnx' if kind == 'onnx' else 'pt'}"
    code, text, err = run(capsys, "calibrate", src, "--manifest", manifest, "--temperature", "--out", out,
                          "--workers", "0", "--device", "cpu")
    assert code == 0, err
    assert f"temperatures fitted on refit_{kind}.csv, split val" in text and "T before" in text and "ECE raw" in text
    old, new = open_predictor(src, device="cpu"), open_predictor(out, device="cpu")
    assert new.card.temperatures["fitted_on"].startswith(f"refit_{kind}.csv, split val")
    _, raw = val_predictions(src, manifest, calibrated=False)
    # approx: ONNX Runtime's float32 output differs in the last bits with the batch it runs in.
    assert new.card.temperatures["groups"] == pytest.approx(
        fit_temperatures(MULTI_SCHEMA, raw.probs, raw.targets)["groups"], rel=1e-4)
    assert new.card.group_temperatures != old.card.group_temperatures
    assert open_predictor(src, device="cpu").card == old.card  # the model itself is unchanged
    # Thresholds moved with the temperatures: every multi-label value is decided as before.
    _, before = val_predictions(src, manifest, calibrated=True)
    _, after = val_predictions(out, manifest, calibrated=True)
    t_old, t_new = old.card.decision_thresholds["marks"], new.card.decision_thresholds["marks"]
    assert t_old != t_new
    assert ((before.probs["marks"] >= np.array(t_old)) == (after.probs["marks"] >= np.array(t_new))).all()


def test_new_temperatures_drop_a_zero_shot_calibration_chosen_at_the_old_ones(trained, capsys, caplog,
                                                                              tmp_path) -> None:
    from attrtag.api.models import _restamp
    from attrtag.zeroshot.calibration import Calibration

    src = tmp_path / "with_gamma.onnx"
    card = open_predictor(trained["onnx"], device="cpu").card
    _restamp(trained["onnx"], card.replace(calibration=Calibration(0.7, ("a",), True, "0" * 64).to_dict()), src)
    rows = trained["manifest"].read_text().splitlines()
    manifest = trained["manifest"].parent / "refit_gamma.csv"  # other val rows: other temperatures
    swapped = [r.replace(",train", ",val") if i % 3 == 0 else r.replace(",val", ",train") for i, r in enumerate(rows[1:])]
    manifest.write_text("\n".join([rows[0], *swapped]) + "\n")
    out = tmp_path / "refit.onnx"
    code, _, err = run(capsys, "calibrate", src, "--manifest", manifest, "--temperature", "--out", out,
                       "--workers", "0", "--device", "cpu")
    assert code == 0, err
    assert open_predictor(src, device="cpu").card.calibration is not None  # the source keeps it
    assert open_predictor(out, device="cpu").card.calibration is None
    said = [r.getMessage() for r in caplog.records if "zero-shot calibration (gamma 0.7)" in r.getMessage()]
    assert len(said) == 1 and "is dropped; choose it again with 'attrtag calibrate'" in said[0]


def test_calibrate_temperature_refusals_are_one_line(trained, capsys, tmp_path) -> None:
    with pytest.raises(AttrtagError, match="^value_thresholds=True and temperature=True exclude each other"):
        attrtag.calibrate(trained["onnx"], trained["manifest"], out=tmp_path / "x.onnx", temperature=True,
                          value_thresholds=True)
    no_labels = tmp_path / "unlabelled.csv"
    rows = trained["manifest"].read_text().splitlines()
    no_labels.write_text("path,colour,shape,band,marks,split\n" + "".join(
        f"{(trained['manifest'].parent / r.split(',')[0])},,,,,val\n" for r in rows[1:6]))
    code, _, err = run(capsys, "calibrate", trained["onnx"], "--manifest", no_labels, "--temperature", "--out",
                       tmp_path / "y.onnx", "--workers", "0", "--device", "cpu")
    assert code == 2 and err.count("\n") == 1 and "no labelled image in the val rows" in err, err
    assert not (tmp_path / "y.onnx").exists()
