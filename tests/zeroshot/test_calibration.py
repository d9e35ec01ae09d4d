"""Priors and calibration as they travel: the scorer's gamma, what a calibration holds for, the lint."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from attrtag.errors import AttrtagError
from attrtag.schema import Schema
from attrtag.zeroshot.calibration import (
    Calibration, given_calibration, priors_from_counts, resolve_calibration, rules_digest,
)
from attrtag.zeroshot.classifier import ClassScorer, score_classes
from attrtag.cli import FLAGS
from attrtag.errors import spell
from attrtag.zeroshot.scoring import ClassScoring, class_scoring
from attrtag.zeroshot.rules import Rules, lint, resolve_rules

SCHEMA = Schema.from_dict({"a": ["x", "y", "z"], "b": ["p", "q"]})
RULES_DICT = {"classes": {"A": {"a": "x"}, "B": {"a": ["x", "y"], "b": "q"}, "C": {"a": {"x": 2, "z": 1}, "b": "p"}}}
RULES = Rules.from_dict(RULES_DICT, SCHEMA)
PROBS = {"a": np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]), "b": np.array([[0.6, 0.4], [0.5, 0.5]])}
COUNTS = {"a": (9, 0, 3), "b": (4, 6)}


def test_gamma_lowers_only_the_seen_classes_and_can_flip_the_winner() -> None:
    plain = score_classes(PROBS, RULES, SCHEMA)
    assert plain.predicted == ("C", "C")
    cal = ClassScorer(RULES, SCHEMA, gamma=0.5, seen=("A", "C"))(PROBS)
    np.testing.assert_allclose(cal.scores, plain.scores - [0.5, 0.0, 0.5])
    np.testing.assert_array_equal(cal.offsets, [-0.5, 0.0, -0.5])
    # Image 0: C = (log 0.6 + log 0.6) / 2 = -0.51 beats B = (log 0.8 + log 0.4) / 2 = -0.57 by
    # 0.06; 0.5 lower, B (unseen) wins. Image 1: C -0.69 vs B -1.15: 0.46 < 0.5, B again.
    assert cal.predicted == ("B", "B")
    # The explanation stays the groups' own terms: they add up to the score without the offset.
    for i in range(2):
        c = int(cal.top1[i])
        assert sum(cal.explain(i).values()) == pytest.approx(cal.scores[i, c] - cal.offsets[c])
    with pytest.raises(AttrtagError, match="seen classes D"):
        ClassScorer(RULES, SCHEMA, gamma=0.5, seen=("A", "D"))
    with pytest.raises(AttrtagError, match="finite"):
        ClassScorer(RULES, SCHEMA, gamma=float("inf"), seen=("A",))


def test_priors_come_from_counts_with_one_pseudo_count() -> None:
    priors = priors_from_counts(COUNTS)
    np.testing.assert_array_equal(priors["a"], [10, 1, 4])
    scores = ClassScorer(RULES, SCHEMA, priors=priors)(PROBS).scores
    # A accepts x only: log P(x) - log prior(x), prior(x) = 10 / 15.
    assert scores[0, 0] == pytest.approx(math.log(0.5) - math.log(10 / 15))


def test_rules_digest_is_the_same_from_a_file_a_dict_or_another_key_order(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("classes:\n  A: {a: x}\n  B: {b: q, a: [x, y]}\n  C: {b: p, a: {x: 2, z: 1}}\n")
    assert rules_digest(Rules.load(path, SCHEMA)) == rules_digest(RULES)
    changed = Rules.from_dict({"classes": {**RULES_DICT["classes"], "C": {"a": {"x": 2, "z": 2}, "b": "p"}}}, SCHEMA)
    assert rules_digest(changed) != rules_digest(RULES)


def test_a_calibration_applies_only_to_its_rules_and_scoring() -> None:
    cal = Calibration(0.3, ("A", "C"), True, rules_digest(RULES), info={"chosen_on": "m.csv, split val, 10 images"})
    assert Calibration.from_dict(cal.to_dict()) == cal
    assert Calibration.from_dict(cal.to_dict()).info["chosen_on"] == "m.csv, split val, 10 images"
    assert resolve_calibration(None, RULES, priors=True, source="m.onnx") == (None, None)
    assert resolve_calibration(cal.to_dict(), RULES, priors=True, source="m.onnx") == (cal, None)
    other = Rules.from_dict({"classes": {"A": {"a": "x"}, "B": {"b": "q"}}}, SCHEMA)
    none, why = resolve_calibration(cal, other, priors=True, source="m.onnx")
    assert none is None and "m.onnx" in why and "other class rules" in why and "not applied" in why
    none, why = resolve_calibration(cal, RULES, priors=False, source="m.onnx")
    assert none is None and "with label priors" in why
    with pytest.raises(AttrtagError, match="lacks gamma"):
        Calibration.from_dict({"seen": ["A"], "priors": True, "rules_sha256": "0"}, source="m.onnx")
    with pytest.raises(AttrtagError, match="seen classes by name"):
        Calibration(0.3, (), True, "0")


def test_class_scoring_carries_priors_and_calibration_through_its_header_form() -> None:
    cal = Calibration(0.3, ("A", "C"), True, rules_digest(RULES))
    scoring = ClassScoring(RULES, SCHEMA, source="r.yaml", label_counts=COUNTS, calibration=cal)
    back = ClassScoring.from_dict(scoring.to_dict(), SCHEMA, source="tags.jsonl")
    assert back == scoring and back.label_counts == COUNTS and back.calibration == cal
    want = ClassScorer(RULES, SCHEMA, priors=priors_from_counts(COUNTS), gamma=0.3, seen=("A", "C"))(PROBS)
    assert back(PROBS).predicted == want.predicted
    assert "label priors" in scoring.describe() and "gamma 0.3 on 2 seen classes" in scoring.describe()
    note = scoring.scoring_note()
    assert "priors=False" in note and "calibration=False" in note  # the library's words
    assert "--no-priors" in spell(note, FLAGS) and "--no-calibration" in spell(note, FLAGS)  # the CLI's
    # A header written before priors travelled has neither: scoring as before.
    old = {k: v for k, v in scoring.to_dict().items() if k not in ("priors", "calibration")}
    plain = ClassScoring.from_dict(old, SCHEMA, source="old.jsonl")
    assert plain.label_counts is None and plain.calibration is None and plain.scoring_note() is None
    assert plain != scoring  # resuming with other scoring is refused


@dataclass(frozen=True)
class _Card:
    """What travels with a model, as :func:`class_scoring` reads it."""

    schema: Schema
    rules: Any
    label_counts: Any
    calibration: Any


def test_class_scoring_warns_and_drops_a_calibration_of_other_rules() -> None:
    cal = Calibration(0.3, ("A", "C"), True, rules_digest(RULES)).to_dict()
    counts = {"a": (9, 2, 3), "b": (4, 6)}
    card = _Card(SCHEMA, RULES_DICT, counts, cal)
    warnings: list[str] = []
    same = class_scoring(card, None, name="m.onnx", warn=warnings.append)
    assert same.calibration is not None and same.label_counts == counts and warnings == []
    other = {"classes": {"A": {"a": "x"}, "B": {"b": "q"}}}
    dropped = class_scoring(card, other, name="m.onnx", warn=warnings.append)
    assert dropped.calibration is None and dropped.label_counts == counts
    assert len(warnings) == 1 and "other class rules" in warnings[0]
    no_priors = class_scoring(card, None, priors=False, name="m.onnx", warn=warnings.append)
    assert no_priors.label_counts is None and no_priors.calibration is None
    assert "chosen on scores with label priors" in warnings[-1]
    assert class_scoring(card, None, calibration=False).calibration is None
    assert class_scoring(card, False) is None and class_scoring(SCHEMA) is None
    bad_counts = {"a": (1, 2), "b": (1, 1)}  # 2 counts for a group of 3 values
    with pytest.raises(AttrtagError, match="priors\\['a'\\]"):
        class_scoring(_Card(SCHEMA, RULES_DICT, bad_counts, None), name="m.onnx")


def test_class_scoring_refuses_class_options_without_rules_and_contradictions() -> None:
    card = _Card(SCHEMA, None, None, None)
    with pytest.raises(AttrtagError, match="class_top_k, overrides need class rules, but m.onnx embeds no rules"):
        class_scoring(card, None, top_k=3, overrides={"a": "x"}, name="m.onnx")
    with pytest.raises(AttrtagError) as err:
        class_scoring(card, False, unknown_threshold=0.0, name="m.onnx")
    assert "unknown_threshold needs class rules, but rules=False was given" in str(err.value)
    assert "--unknown-threshold needs class rules, but --no-rules was given" in err.value.spelled(FLAGS)
    with pytest.raises(AttrtagError, match="seen names the classes gamma applies to"):
        class_scoring(card, RULES_DICT, seen=["A"])
    with pytest.raises(AttrtagError, match="gamma=G and calibration=False contradict"):
        class_scoring(card, RULES_DICT, gamma=0.2, seen=["A"], calibration=False)
    given = class_scoring(card, RULES_DICT, gamma=0.2, seen=["A"])
    assert given.calibration.gamma == 0.2 and given.calibration.seen == ("A",)
    with pytest.raises(AttrtagError, match="overrides a=w: unknown value 'w'"):
        class_scoring(card, RULES_DICT, overrides={"a": "w"})


def test_lint_with_label_counts_names_class_group_and_value_no_image_carries(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("classes:\n  A: {a: x}\n  B:\n    a: [x, y]\n    b: q\n  C: {a: y, b: p}\n")
    rules = Rules.load(path, SCHEMA)
    assert not any("no training image" in w for w in lint(rules, SCHEMA))  # no counts: nothing to say
    warnings = [w for w in lint(rules, SCHEMA, COUNTS) if "no training image" in w]
    assert len(warnings) == 2  # y, accepted by B (with x) and by C, has count 0
    assert any("class 'B' depends on a=y" in w and "r.yaml:4" in w for w in warnings)
    assert any("class 'C' depends on a=y" in w and "r.yaml:6" in w for w in warnings)
    _, through_resolve = resolve_rules(path, SCHEMA, label_counts=COUNTS)
    assert [w for w in through_resolve if "no training image" in w] == warnings


def test_a_constant_given_by_hand_applies_to_the_stored_or_named_seen_classes() -> None:
    stored = Calibration(0.3, ("A", "C"), True, rules_digest(RULES))
    given = given_calibration(1.5, RULES, priors=True, stored=stored)
    assert (given.gamma, given.seen, given.rules_sha256) == (1.5, ("A", "C"), rules_digest(RULES))
    assert given_calibration(1.5, RULES, priors=False, seen=["B"]).seen == ("B",)
    with pytest.raises(AttrtagError, match="pass seen=A"):
        given_calibration(1.5, RULES, priors=True, source="tags.jsonl header")
    with pytest.raises(AttrtagError, match="seen: D not among"):
        given_calibration(1.5, RULES, priors=True, seen=["D"])
