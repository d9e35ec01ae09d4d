"""The model card: one object, written into checkpoints and ONNX files by the same code, read back
by the same code; files written before the card existed still load."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from attrtag.card import FORMAT_VERSION, ModelCard
from attrtag.data.preprocess import Preprocessing
from attrtag.errors import CheckpointError
from attrtag.schema import Schema
from attrtag.model import build_model, load_checkpoint, load_model, save_checkpoint
from attrtag.runtime import open_predictor
from attrtag.runtime.onnx_backend import read_onnx_card
from attrtag_onnx.export import export_onnx
from tests.helpers import PREP, SCHEMA

RULES = {"classes": {"redtop": {"colour": "red", "band": "top"}, "odd": {"shape": ["s1", "s3", "s5"]}}}
COUNTS = {"colour": (10, 0, 3), "shape": (1, 2, 3, 4, 5, 6, 7), "band": (8, 9)}
CALIBRATION = {"gamma": 0.25, "seen": ["redtop"], "chosen_on": "val"}


@pytest.fixture(scope="module")
def card() -> ModelCard:
    return ModelCard(SCHEMA, PREP, "test_resnet", rules=RULES, label_counts=COUNTS, calibration=CALIBRATION)


@pytest.fixture(scope="module")
def model(card: ModelCard) -> torch.nn.Module:
    torch.manual_seed(3)
    return build_model(SCHEMA, "test_resnet", card=card).eval()


def test_dict_and_metadata_forms_round_trip(card: ModelCard) -> None:
    d = card.to_dict()
    # Without a multi-label group the card is written as format 2: attrtag before them reads it.
    assert d["format_version"] == 2 < FORMAT_VERSION and json.loads(json.dumps(d)) == d  # plain JSON
    assert ModelCard.from_dict(d) == card
    props = card.to_metadata()
    assert set(props) == {f"attrtag.{k}" for k in d} and all(isinstance(v, str) for v in props.values())
    assert ModelCard.from_metadata({**props, "producer": "other tool"}) == card
    assert ModelCard.from_dict(ModelCard(SCHEMA, PREP, "x").to_dict()).rules is None  # optional entries stay optional


def test_a_card_with_a_multi_label_group_round_trips_with_its_thresholds() -> None:
    schema = Schema.from_dict({"colour": ["red", "green"], "tags": {"kind": "multi", "values": ["a", "b", "c"]}})
    chosen = {"groups": {"tags": {"a": 0.3, "c": 0.7}}, "default": 0.5, "fallback": {"tags": ["b"]}}
    card = ModelCard(schema, PREP, "x", label_counts={"colour": (3, 4), "tags": (2, 0, 5)},
                     label_totals={"tags": (7, 7, 6)}, value_thresholds=chosen)
    d = card.to_dict()
    assert d["format_version"] == 3 < FORMAT_VERSION and d["schema"]["tags"] == {"kind": "multi", "values": ["a", "b", "c"]}
    assert ModelCard.from_dict(d) == card == ModelCard.from_metadata(card.to_metadata())
    assert card.decision_thresholds == {"tags": (0.3, 0.5, 0.7)}
    with pytest.raises(CheckpointError, match="'colour' is not a multi-label group"):
        card.replace(value_thresholds={"groups": {"colour": {"red": 0.4}}})
    with pytest.raises(CheckpointError, match="1.5 is not a value's threshold"):
        card.replace(value_thresholds={"groups": {"tags": {"a": 1.5}}})
    with pytest.raises(CheckpointError, match="format version 3 is newer than this attrtag understands \\(2\\)"):
        _read_as_attrtag_of_format(2, d)


def _read_as_attrtag_of_format(version: int, d: dict) -> ModelCard:
    """``d`` read as an attrtag that understands formats up to ``version`` reads it."""
    import attrtag.card as card_module

    saved = card_module.FORMAT_VERSION
    card_module.FORMAT_VERSION = version
    try:
        return ModelCard.from_dict(d)
    finally:
        card_module.FORMAT_VERSION = saved


def test_a_card_with_temperatures_is_format_4_which_attrtag_before_them_refuses() -> None:
    card = ModelCard(SCHEMA, PREP, "x", temperatures={"groups": {"colour": 1.7}, "fitted_on": 40})
    d = card.to_dict()
    assert d["format_version"] == FORMAT_VERSION == 4
    assert ModelCard.from_dict(d) == card == ModelCard.from_metadata(card.to_metadata())
    # attrtag before temperatures would drop the entry and give raw probabilities: it refuses instead
    with pytest.raises(CheckpointError, match="format version 4 is newer than this attrtag understands \\(3\\); "
                                              "upgrade attrtag"):
        _read_as_attrtag_of_format(3, d)
    assert d["format_version"] != card.replace(temperatures=None).to_dict()["format_version"]


def test_the_card_travels_through_checkpoint_and_onnx_unchanged(card: ModelCard, model, tmp_path: Path) -> None:
    ckpt = save_checkpoint(tmp_path / "m.pt", model, epoch=3)
    assert load_checkpoint(ckpt)["card"] == card and load_model(ckpt).card == card
    onnx_path = export_onnx(model, tmp_path / "m.onnx", exporter="torchscript").path
    assert read_onnx_card(onnx_path) == card  # same object back, label counts and calibration included
    assert open_predictor(onnx_path, device="cpu").card == open_predictor(ckpt, device="cpu").card == card
    fp16 = export_onnx(model, tmp_path / "h.onnx", fp16=True, exporter="torchscript").path
    assert read_onnx_card(fp16) == card.replace(precision="fp16")


def test_bad_cards_are_refused_with_the_entry_named() -> None:
    d = ModelCard(SCHEMA, PREP, "test_resnet").to_dict()
    with pytest.raises(CheckpointError, match="newer than this attrtag"):
        ModelCard.from_dict({**d, "format_version": FORMAT_VERSION + 1})
    with pytest.raises(CheckpointError, match="missing backbone"):
        ModelCard.from_dict({k: v for k, v in d.items() if k != "backbone"})
    with pytest.raises(CheckpointError, match="label_counts of group 'shape' must list 7 counts"):
        ModelCard(SCHEMA, PREP, "test_resnet", label_counts={**COUNTS, "shape": (1, 2)})
    with pytest.raises(CheckpointError, match="metadata 'attrtag.rules' is not valid JSON"):
        ModelCard.from_metadata({**ModelCard(SCHEMA, PREP, "x").to_metadata(), "attrtag.rules": "{oops"})


# -- files written by attrtag 0.1 -----------------------------------------------------------------
OLD_PREP = {"input_size": [32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic",
            "crop_pct": 1.0, "resize_mode": "center_crop"}


def test_a_version_1_checkpoint_still_loads_and_predicts_the_same(model, tmp_path: Path) -> None:
    # attrtag 0.1 stored schema/preprocessing/backbone/rules at the top level (checkpoint.py, VERSION 1).
    old = tmp_path / "old.pt"
    torch.save({"format": "attrtag-checkpoint", "version": 1, "model": model.state_dict(),
                "schema": SCHEMA.to_dict(), "preprocessing": OLD_PREP, "backbone": "test_resnet",
                "rules": RULES, "config": {"resize_mode": "center_crop", "epochs": 2}}, old)
    loaded = load_model(old)
    assert loaded.card == ModelCard(SCHEMA, PREP, "test_resnet", rules=RULES)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for g in SCHEMA.names:
            assert torch.equal(loaded(x)[g], model(x)[g])


def test_a_version_1_onnx_file_still_loads(model, tmp_path: Path) -> None:
    path = export_onnx(model, tmp_path / "new.onnx", exporter="torchscript").path
    proto = onnx.load(str(path))
    # Rewrite the metadata as attrtag 0.1 wrote it (attrtag_onnx/metadata.py, FORMAT_VERSION 1).
    old_props = {"attrtag.format_version": "1", "attrtag.schema": json.dumps(SCHEMA.to_dict()),
                 "attrtag.preprocessing": json.dumps(OLD_PREP), "attrtag.backbone": '"test_resnet"',
                 "attrtag.precision": '"fp32"', "attrtag.rules": json.dumps(RULES)}
    del proto.metadata_props[:]
    for k, v in old_props.items():
        proto.metadata_props.add(key=k, value=v)
    old = tmp_path / "old.onnx"
    onnx.save(proto, str(old))
    p = open_predictor(old, device="cpu")
    assert p.card == ModelCard(SCHEMA, Preprocessing.from_dict(OLD_PREP), "test_resnet", rules=RULES)
    assert p.preprocessing.crop_mode == "center"
    batch = np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(batch))
    for g in SCHEMA.names:
        np.testing.assert_allclose(p(batch)[g], torch.softmax(want[g], 1).numpy(), atol=1e-5)
