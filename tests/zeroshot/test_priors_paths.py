"""Priors on every path: ``classify`` names the classes ``tag --rules`` names, a value no training
image carried cannot win every image, and a warning is said once."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import attrtag
from attrtag.card import ModelCard
from attrtag.cli import main
from attrtag.model import build_model, save_checkpoint
from attrtag.schema import Schema
from attrtag.tagging import CLASS_FIELDS, OutputMeta, RecordLayout, read_output
from attrtag.zeroshot.calibration import priors_from_counts
from attrtag.zeroshot.classifier import ClassScorer
from attrtag.zeroshot.rules import Rules
from attrtag.zeroshot.scoring import ClassScoring, class_scoring
from attrtag.api._tag_carrier import tag_carrier
from tests.helpers import PREP, SCHEMA, make_checkpoint, run_cli, write_images

# Blue was never labelled: without priors a random model's near-uniform outputs name 'greenish'
# (two groups, both matched a little), with them 'bluish' (the rarest colour): priors decide.
COUNTS = {"colour": (500, 400, 0), "shape": (30, 20, 10, 40, 25, 15, 5), "band": (300, 600)}
RULES = "classes:\n  reddish: {colour: red}\n  bluish: {colour: blue}\n  greenish: {colour: green, band: top}\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny model whose card carries label priors, images, rules, and its tags with and without rules."""
    d = tmp_path_factory.mktemp("priors")
    torch.manual_seed(0)
    card = ModelCard(SCHEMA, PREP, "test_resnet", label_counts=COUNTS)
    save_checkpoint(d / "model.pt", build_model(SCHEMA, "test_resnet", card=card), config={})
    write_images(d / "imgs", 7, size=36)
    (d / "rules.yaml").write_text(RULES)
    for name, extra in (("ruled", ["--rules", d / "rules.yaml"]), ("plain", [])):
        assert main([str(a) for a in ("tag", d / "model.pt", d / "imgs", "--out", d / f"{name}.jsonl",
                                                  "--workers", "0", "--batch-size", "3", "--no-progress", *extra)]) == 0
    return {"dir": d, "model": d / "model.pt", "rules": d / "rules.yaml", "ruled": d / "ruled.jsonl",
            "plain": d / "plain.jsonl"}


def classes_of(path: Path) -> list[dict]:
    return [{k: r[k] for k in CLASS_FIELDS} for r in read_output(path)[1]]


def test_classify_names_the_classes_tag_names_with_the_same_model_rules_and_priors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, world: dict[str, Path]
) -> None:
    tagged = classes_of(world["ruled"])
    assert len(tagged) == 7
    # From tags written without rules: the model beside them (same sha256) gives the priors.
    rc, _, err = run_cli(capsys, "classify", world["plain"], "--rules", world["rules"], "--out", tmp_path / "a.jsonl")
    assert rc == 0 and "label priors from" in err and "model.pt" in err
    assert classes_of(tmp_path / "a.jsonl") == tagged  # record by record: class, prob, top classes, explanation
    # The header of tags written with rules carries the priors itself.
    rc, _, _ = run_cli(capsys, "classify", world["ruled"], "--out", tmp_path / "b.jsonl")
    assert rc == 0 and classes_of(tmp_path / "b.jsonl") == tagged
    # The test can fail: without priors other classes are named.
    rc, _, _ = run_cli(capsys, "classify", world["plain"], "--rules", world["rules"], "--no-priors",
                       "--out", tmp_path / "c.jsonl")
    assert rc == 0 and [r["class"] for r in classes_of(tmp_path / "c.jsonl")] != [r["class"] for r in tagged]


def test_tags_away_from_their_model_say_so_once_and_model_file_brings_the_priors_back(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, world: dict[str, Path]
) -> None:
    for suffix in ("", ".meta.json"):  # the tag file and its header, wherever the format keeps it
        if Path(f"{world['plain']}{suffix}").exists():
            shutil.copy(f"{world['plain']}{suffix}", tmp_path / f"plain.jsonl{suffix}")
    tags = tmp_path / "plain.jsonl"
    rc, _, err = run_cli(capsys, "classify", tags, "--rules", world["rules"], "--out", tmp_path / "a.jsonl")
    said = [line for line in err.splitlines() if "no label priors or calibration" in line]
    assert rc == 0 and len(said) == 1 and "'model.pt'" in said[0] and "--model M" in said[0]
    assert "label priors" not in err.replace(said[0], "")  # and no note claiming priors were applied
    rc, _, _ = run_cli(capsys, "classify", tags, "--rules", world["rules"], "--model", world["model"],
                       "--out", tmp_path / "b.jsonl")
    assert rc == 0 and classes_of(tmp_path / "b.jsonl") == classes_of(world["ruled"])
    other = make_checkpoint(tmp_path / "other.pt", seed=3)
    rc, _, err = run_cli(capsys, "classify", tags, "--rules", world["rules"], "--model", other,
                         "--out", tmp_path / "c.jsonl")
    assert rc == 2 and err.count("\n") == 1 and "--model" in err and "is not the model that tagged" in err
    assert not (tmp_path / "c.jsonl").exists()


def test_a_header_from_before_priors_travelled_is_said_to_lack_them() -> None:
    rules = Rules.from_dict({"classes": {"reddish": {"colour": "red"}}}, SCHEMA)
    d = ClassScoring(rules, SCHEMA).to_dict()
    del d["priors"]  # as attrtag wrote headers before priors travelled
    old = ClassScoring.from_dict(d, SCHEMA, source="old.jsonl")
    assert old.label_counts is None and not old.label_counts_known and old == ClassScoring(rules, SCHEMA)
    meta = OutputMeta(RecordLayout(SCHEMA, classes=old), "gone.onnx", "0" * 64)
    carrier = tag_carrier(meta, Path("/nonexistent/old.jsonl"), model=None, wanted=True)
    assert "older attrtag" in carrier.warning and "'gone.onnx'" in carrier.warning
    assert tag_carrier(meta, Path("/nonexistent/old.jsonl"), model=None, wanted=False).warning == ""


# -- a value no training image carried ----------------------------------------------------------

SMALL = Schema.from_dict({"colour": ["red", "green", "blue"], "marks": {"kind": "multi", "values": ["dot", "ring"]}})
SMALL_RULES = Rules.from_dict({"classes": {"reddish": {"colour": "red"}, "bluish": {"colour": "blue"},
                                           "ringed": {"marks": {"ring": True}}, "dotted": {"marks": {"dot": True}}}},
                              SMALL)
# Blue and 'ring present' were never seen in 10,000 training images.
BIG = {"colour": (6000, 4000, 0), "marks": (5000, 0)}
BIG_TOTALS = {"marks": (10000, 10000)}


def test_a_class_needing_a_value_no_image_carried_does_not_win_images_of_another_class() -> None:
    # Red images, as a trained model sees them: little mass on blue, dots present, rings not.
    probs = {"colour": np.array([[0.8, 0.15, 0.05], [0.6, 0.37, 0.03]]), "marks": np.array([[0.9, 0.08], [0.7, 0.1]])}
    colour_only = Rules.from_dict({"classes": {"reddish": {"colour": "red"}, "bluish": {"colour": "blue"}}}, SMALL)
    marks_only = Rules.from_dict({"classes": {"ringed": {"marks": {"ring": True}}, "dotted": {"marks": {"dot": True}}}},
                                 SMALL)
    priors = priors_from_counts(BIG, BIG_TOTALS)
    assert ClassScorer(colour_only, SMALL, priors=priors)(probs).predicted == ("reddish", "reddish")
    assert ClassScorer(marks_only, SMALL, priors=priors)(probs).predicted == ("dotted", "dotted")
    # The test can fail: with one pseudo-count alone (the old priors) the unseen values win both.
    laplace = {"colour": np.array(BIG["colour"]) + 1.0,
               "marks": (np.array(BIG["marks"]) + 1.0) / (np.array(BIG_TOTALS["marks"]) + 2.0)}
    assert ClassScorer(colour_only, SMALL, priors=laplace)(probs).predicted == ("bluish", "bluish")
    assert ClassScorer(marks_only, SMALL, priors=laplace)(probs).predicted == ("ringed", "ringed")


def test_the_prior_floor_leaves_well_counted_values_alone() -> None:
    priors = priors_from_counts({"colour": (40, 30, 0), "shape": (3, 0)})
    np.testing.assert_array_equal(priors["colour"], [41, 31, 70 / 3 / 4])  # a quarter of the mean count
    np.testing.assert_array_equal(priors["shape"], [4, 1])  # few labels: the pseudo-count dominates


# -- warnings once ----------------------------------------------------------------------------


def test_the_same_warning_is_said_once_per_run(
    caplog: pytest.LogCaptureFixture, tmp_path: Path, world: dict[str, Path]
) -> None:
    rules = tmp_path / "twins.yaml"
    rules.write_text("classes:\n  a: {colour: red}\n  b: {colour: red}\n  c: {colour: blue}\n")
    heard: list[str] = []
    class_scoring(ModelCard(SCHEMA, PREP, "test_resnet", label_counts=COUNTS), rules, warn=heard.append)
    assert len(heard) == len(set(heard)) == 2  # the twins, and blue that no training image carried
    # A tagger that scores batches with rules logs each warning once, not once per call.
    tagger = attrtag.load(world["model"], device="cpu", workers=0)
    probs = tagger.predict([np.zeros((36, 36, 3), dtype=np.uint8), np.full((36, 36, 3), 200, dtype=np.uint8)])
    with caplog.at_level(logging.WARNING, logger="attrtag"):
        for _ in range(3):
            tagger.classify(probs, rules=rules)
    twins = [r for r in caplog.records if "identical rules" in r.getMessage()]
    assert len(twins) == 1 and str(rules) in twins[0].getMessage()
    tagger.close()


def test_rules_of_a_header_are_json_and_keep_priors(world: dict[str, Path]) -> None:
    meta, _ = read_output(world["ruled"])
    assert meta.layout.classes.label_counts == {g: tuple(c) for g, c in COUNTS.items()}
    assert json.loads(json.dumps(meta.to_dict()))["classes"]["priors"]["colour"] == [500, 400, 0]
