"""The card's temperatures: stored in checkpoints and ONNX files, checked, applied by both backends."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from attrtag.card import ModelCard
from attrtag.errors import CheckpointError
from attrtag.model import load_checkpoint
from attrtag.model.checkpoint import replace_card
from attrtag.runtime import open_predictor
from attrtag.runtime.onnx_backend import read_onnx_card
from attrtag.runtime.temperature import apply_temperatures
from tests.helpers import MULTI_SCHEMA, PREP, make_checkpoint, run_cli, write_images

TEMPERATURES = {"groups": {"colour": 2.5, "band": 0.4, "marks": 1.7}, "fitted_on": "the val split, 9 images, epoch 3"}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from attrtag_onnx.export import export_onnx

    d = tmp_path_factory.mktemp("temps")
    plain = make_checkpoint(d / "plain.pt", MULTI_SCHEMA)
    card = load_checkpoint(plain)["card"].replace(temperatures=TEMPERATURES)
    ckpt = replace_card(plain, card, out=d / "model.pt")
    onnx = export_onnx(ckpt, d / "model.onnx", exporter="torchscript").path
    return {"dir": d, "plain": plain, "ckpt": ckpt, "onnx": onnx}


def batch(n: int = 6) -> np.ndarray:
    return np.random.default_rng(0).normal(0, 1, (n, 3, *PREP.input_size)).astype(np.float32)


def test_the_temperatures_travel_in_checkpoints_and_onnx_files(models: dict[str, Path]) -> None:
    assert load_checkpoint(models["ckpt"])["card"].temperatures == TEMPERATURES
    card = read_onnx_card(models["onnx"])
    assert card.temperatures == TEMPERATURES and card.group_temperatures == {"colour": 2.5, "band": 0.4, "marks": 1.7}
    assert load_checkpoint(models["plain"])["card"].temperatures is None  # older models: none, T = 1
    assert ModelCard.from_dict(card.to_dict()) == card


def test_both_backends_apply_the_card_temperatures_and_give_raw_ones_when_asked(models: dict[str, Path]) -> None:
    x = batch()
    by_onnx, by_torch = open_predictor(models["onnx"], device="cpu"), open_predictor(models["ckpt"], device="cpu")
    raw_onnx = open_predictor(models["onnx"], device="cpu", calibrated=False)
    raw_torch = open_predictor(models["ckpt"], device="cpu", calibrated=False)
    assert by_onnx.temperatures == by_torch.temperatures == {"colour": 2.5, "band": 0.4, "marks": 1.7}
    assert raw_onnx.temperatures == raw_torch.temperatures == {}
    cal_o, cal_t, raw_o, raw_t = by_onnx(x), by_torch(x), raw_onnx(x), raw_torch(x)
    expected = apply_temperatures(raw_t, MULTI_SCHEMA, by_torch.temperatures)
    for g in MULTI_SCHEMA.names:
        assert np.allclose(cal_o[g], cal_t[g], atol=1e-5) and np.allclose(raw_o[g], raw_t[g], atol=1e-5), g
        assert np.allclose(cal_t[g], expected[g], atol=1e-6) and cal_t[g].dtype == np.float32
    assert not np.allclose(cal_t["colour"], raw_t["colour"], atol=1e-3)  # T = 2.5 flattens the distribution
    assert cal_t["colour"].max(1).mean() < raw_t["colour"].max(1).mean()
    assert np.allclose(cal_t["shape"], raw_t["shape"])  # no temperature: raw
    assert (cal_t["colour"].argmax(1) == raw_t["colour"].argmax(1)).all()
    assert np.allclose(cal_t["colour"].sum(1), 1, atol=1e-5)


def test_a_model_without_temperatures_predicts_as_before(models: dict[str, Path]) -> None:
    x = batch()
    predictor = open_predictor(models["plain"], device="cpu")
    raw = open_predictor(models["plain"], device="cpu", calibrated=False)
    assert predictor.temperatures == {} and all(np.array_equal(predictor(x)[g], raw(x)[g]) for g in MULTI_SCHEMA.names)


@pytest.mark.parametrize("entry, words", [
    ({"groups": {"colour": 0}}, "temperatures of 'colour': 0 is not a temperature (a finite number > 0)"),
    ({"groups": {"colour": -1.5}}, "temperatures of 'colour': -1.5 is not a temperature"),
    ({"groups": {"colour": float("inf")}}, "temperatures of 'colour': inf is not a temperature"),
    ({"groups": {"colour": True}}, "temperatures of 'colour': True is not a temperature"),
    ({"groups": {"colour": "2"}}, "temperatures of 'colour': '2' is not a temperature"),
    ({"groups": {"hue": 2.0}}, "temperatures: 'hue' is not a group of the schema"),
    ({"colour": 2.0}, "temperatures: 'groups' must map each group to its temperature"),
])
def test_a_bad_card_temperature_is_refused_naming_it(entry: dict, words: str) -> None:
    with pytest.raises(CheckpointError) as err:
        ModelCard(MULTI_SCHEMA, PREP, "test_resnet", temperatures=entry)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_a_model_file_with_a_bad_temperature_is_one_line_exit_2(models: dict[str, Path], capsys) -> None:
    payload = torch.load(models["ckpt"], weights_only=True)
    payload["card"]["temperatures"] = {"groups": {"band": -2.0}}
    bad = models["dir"] / "bad.pt"
    torch.save(payload, bad)
    write_images(models["dir"] / "imgs", 2)
    out = models["dir"] / "tags.jsonl"
    code, _, err = run_cli(capsys, "tag", bad, models["dir"] / "imgs", "--out", out, "--device", "cpu", "--no-progress")
    assert code == 2 and err.count("\n") == 1 and "temperatures of 'band': -2.0 is not a temperature" in err, err
    assert not out.exists()


def test_a_ray_actors_worker_calibrates_as_the_drivers_layout_says(models: dict[str, Path]) -> None:
    import json

    from attrtag.tagging.engine import TagWorker
    from attrtag.tagging.records import RecordLayout

    paths = np.array([str(p) for p in write_images(models["dir"] / "worker", 3)])
    temps = load_checkpoint(models["ckpt"])["card"].group_temperatures
    calibrated = TagWorker(str(models["onnx"]), RecordLayout(MULTI_SCHEMA, temperatures=temps), device="cpu", workers=0)
    raw = TagWorker(str(models["onnx"]), RecordLayout(MULTI_SCHEMA), device="cpu", workers=0)
    assert calibrated.predictor.temperatures == temps and raw.predictor.temperatures == {}
    rec_c = [json.loads(r) for r in calibrated({"path": paths})["record"]]
    rec_r = [json.loads(r) for r in raw({"path": paths})["record"]]
    values = MULTI_SCHEMA["colour"].values
    probs = np.array([[r["colour_probs"][v] for v in values] for r in rec_r])
    expected = apply_temperatures({"colour": probs}, MULTI_SCHEMA, temps)["colour"]
    assert np.allclose([[r["colour_probs"][v] for v in values] for r in rec_c], expected, atol=2e-5)
