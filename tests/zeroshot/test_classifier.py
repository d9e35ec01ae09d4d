"""Zero-shot scoring and metrics against numbers worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from attrtag.errors import AttrtagError
from attrtag.zeroshot.rules import Rules
from attrtag.schema import Schema
from attrtag.zeroshot.classifier import EPS, apply_overrides, score_classes
from attrtag.zeroshot.metrics import (
    calibrated_stacking,
    choose_gamma,
    evaluate_gzsl,
    evaluate_gzsl_calibrated,
    evaluate_zsl,
    harmonic_mean,
    per_class_accuracy,
)

# Groups of 3 and 2 values: small enough to score by hand.
SCHEMA = Schema.from_dict({"a": ["x", "y", "z"], "b": ["p", "q"]})
RULES = Rules.from_dict(
    {
        "classes": {
            "A": {"a": "x"},
            "B": {"a": ["x", "y"], "b": "q"},
            "C": {"a": {"x": 2, "z": 1}, "b": "p"},
        }
    },
    SCHEMA,
)
# One image; b is certain (exactly 1 and exactly 0).
PROBS = {"a": np.array([[0.5, 0.3, 0.2]]), "b": np.array([[1.0, 0.0]])}

# By hand (mean over constrained groups of log p; C's weights {x: 2, z: 1} become {x: 1, z: 0.5}):
SCORE_A = math.log(0.5)
SCORE_B = (math.log(0.5 + 0.3) + math.log(EPS)) / 2  # P(b=q) = 0 is clipped to eps
SCORE_C = (math.log(0.5 + 0.5 * 0.2) + math.log(1.0)) / 2


def test_scores_match_hand_computation() -> None:
    result = score_classes(PROBS, RULES, SCHEMA)
    np.testing.assert_allclose(result.scores, [[SCORE_A, SCORE_B, SCORE_C]], rtol=1e-12)
    assert np.all(np.isfinite(result.scores)) and np.all(np.isfinite(result.probs))
    assert result.ranking.tolist() == [[2, 0, 1]]
    assert result.ranked_names(0) == ("C", "A", "B")
    assert result.predicted == ("C",)
    total = math.exp(SCORE_A) + math.exp(SCORE_B) + math.exp(SCORE_C)
    expected = [math.exp(SCORE_A) / total, math.exp(SCORE_B) / total, math.exp(SCORE_C) / total]
    np.testing.assert_allclose(result.probs, [expected], rtol=1e-12)
    # Raw per-group terms; NaN where the class does not constrain the group.
    assert result.group_names == ("a", "b")
    np.testing.assert_allclose(result.terms[0, 0], [math.log(0.5), np.nan])
    np.testing.assert_allclose(result.terms[0, 1], [math.log(0.8), math.log(EPS)])


def test_temperature_softens_the_class_probabilities() -> None:
    result = score_classes(PROBS, RULES, SCHEMA, temperature=2.0)
    e = [math.exp(SCORE_A / 2), math.exp(SCORE_B / 2), math.exp(SCORE_C / 2)]
    np.testing.assert_allclose(result.probs, [[v / sum(e) for v in e]], rtol=1e-12)
    np.testing.assert_allclose(result.scores, [[SCORE_A, SCORE_B, SCORE_C]], rtol=1e-12)


def test_priors_divide_by_the_prior_mass() -> None:
    # Counts are accepted: a -> [0.5, 0.25, 0.25], b -> [0.75, 0.25].
    priors = {"a": np.array([2, 1, 1]), "b": np.array([3, 1])}
    result = score_classes(PROBS, RULES, SCHEMA, priors=priors)
    expected_a = math.log(0.5 / 0.5)
    expected_b = (math.log(0.8 / 0.75) + math.log(EPS / 0.25)) / 2
    expected_c = (math.log(0.6 / (0.5 + 0.5 * 0.25)) + math.log(1.0 / 0.75)) / 2
    np.testing.assert_allclose(result.scores, [[expected_a, expected_b, expected_c]], rtol=1e-12)


def test_priors_stop_a_common_value_from_deciding() -> None:
    rules = Rules.from_dict({"classes": {"D": {"a": "x"}, "E": {"a": "y"}}}, SCHEMA)
    probs = {"a": np.array([[0.5, 0.4, 0.1]])}
    plain = score_classes(probs, rules, SCHEMA)
    np.testing.assert_allclose(plain.scores, [[math.log(0.5), math.log(0.4)]])
    assert plain.predicted == ("D",)
    # x was 80% of training labels: 0.5 on x is below its base rate, 0.4 on y is 4x its base rate.
    informed = score_classes(probs, rules, SCHEMA, priors={"a": np.array([0.8, 0.1, 0.1])})
    np.testing.assert_allclose(informed.scores, [[math.log(0.5 / 0.8), math.log(0.4 / 0.1)]])
    assert informed.predicted == ("E",)


def test_zero_prior_on_an_accepted_value_is_refused() -> None:
    with pytest.raises(AttrtagError, match=r"priors\['b'\].*class 'B'.*frequency 0"):
        score_classes(PROBS, RULES, SCHEMA, priors={"a": np.ones(3), "b": np.array([1.0, 0.0])})


def test_ranking_top_k_and_unknown_threshold_per_image() -> None:
    rules = Rules.from_dict({"classes": {"D": {"a": "x"}, "E": {"a": "y"}, "F": {"a": "z"}}}, SCHEMA)
    probs = {"a": np.array([[0.5, 0.4, 0.1], [0.01, 0.01, 0.98], [0.2, 0.7, 0.1]])}
    result = score_classes(probs, rules, SCHEMA, unknown_threshold=0.6, top_k=2)
    # One group per class: softmax(log p) = p, so the class probabilities are the group's.
    np.testing.assert_allclose(result.probs, probs["a"], rtol=1e-12)
    assert result.ranking.tolist() == [[0, 1, 2], [2, 0, 1], [1, 0, 2]]  # ties keep rule order
    assert result.top_k.tolist() == [[0, 1], [2, 0], [1, 0]]
    np.testing.assert_allclose(result.top_k_probs, [[0.5, 0.4], [0.98, 0.01], [0.7, 0.2]])
    assert result.top_k_names(1) == [("F", pytest.approx(0.98)), ("D", pytest.approx(0.01))]
    assert result.unknown.tolist() == [True, False, False]  # 0.5 < 0.6
    assert result.predicted == (None, "F", "E")
    assert score_classes(probs, rules, SCHEMA, top_k=10).top_k.shape == (3, 3)


def test_explanations_add_up_to_the_score() -> None:
    result = score_classes(PROBS, RULES, SCHEMA)
    (top,) = result.explanations
    assert top == {"a": pytest.approx(math.log(0.6) / 2), "b": pytest.approx(0.0)}
    assert sum(top.values()) == pytest.approx(result.scores[0, 2])
    worst = result.explain(0, class_index=1)
    assert worst == {"a": pytest.approx(math.log(0.8) / 2), "b": pytest.approx(math.log(EPS) / 2)}
    assert sum(worst.values()) == pytest.approx(SCORE_B)


ANIMALS = Schema.from_dict(
    {"covering": ["fur", "feathers", "scales", "exoskeleton"], "bill": ["none", "duck", "beak"], "tail": ["no", "yes"]}
)
ANIMAL_RULES = Rules.from_dict(
    {
        "classes": {
            "otter": {"covering": "fur", "bill": "none", "tail": "yes"},
            "platypus": {"covering": "fur", "bill": "duck", "tail": "yes"},
            "duck": {"covering": "feathers", "bill": "duck"},
        }
    },
    ANIMALS,
)
ANIMAL_PROBS = {
    "covering": np.array([[0.9, 0.05, 0.03, 0.02]]),
    "bill": np.array([[0.7, 0.2, 0.1]]),
    "tail": np.array([[0.1, 0.9]]),
}


def test_overriding_the_bill_turns_an_otter_into_a_platypus() -> None:
    before = score_classes(ANIMAL_PROBS, ANIMAL_RULES, ANIMALS)
    np.testing.assert_allclose(
        before.scores[0],
        [
            (math.log(0.9) + math.log(0.7) + math.log(0.9)) / 3,
            (math.log(0.9) + math.log(0.2) + math.log(0.9)) / 3,
            (math.log(0.05) + math.log(0.2)) / 2,
        ],
    )
    assert before.predicted == ("otter",)
    after = score_classes(ANIMAL_PROBS, ANIMAL_RULES, ANIMALS, overrides={"bill": "duck"})
    np.testing.assert_allclose(
        after.scores[0],
        [
            (math.log(0.9) + math.log(EPS) + math.log(0.9)) / 3,
            (math.log(0.9) + math.log(1.0) + math.log(0.9)) / 3,
            (math.log(0.05) + math.log(1.0)) / 2,
        ],
    )
    assert after.predicted == ("platypus",)
    assert ANIMAL_PROBS["bill"].tolist() == [[0.7, 0.2, 0.1]]  # the caller's arrays are untouched
    both = score_classes(ANIMAL_PROBS, ANIMAL_RULES, ANIMALS, overrides={"bill": "duck", "covering": "feathers"})
    assert both.predicted == ("duck",)


def test_override_fills_a_group_the_model_does_not_predict() -> None:
    probs = {"covering": ANIMAL_PROBS["covering"], "bill": ANIMAL_PROBS["bill"]}
    with pytest.raises(AttrtagError, match="group 'tail' is constrained by the rules but missing"):
        score_classes(probs, ANIMAL_RULES, ANIMALS)
    filled = apply_overrides(probs, ANIMALS, {"tail": "yes"})
    assert filled["tail"].tolist() == [[0.0, 1.0]]
    assert "tail" not in probs


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"beak": "duck"}, "unknown group 'beak'"),
        ({"bill": "hooked"}, "unknown value 'hooked' (allowed: none, duck, beak)"),
    ],
)
def test_bad_overrides_name_the_problem(overrides: dict[str, str], fragment: str) -> None:
    with pytest.raises(AttrtagError) as info:
        score_classes(ANIMAL_PROBS, ANIMAL_RULES, ANIMALS, overrides=overrides)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "probs, fragment",
    [
        ({}, "empty input"),
        ({"a": np.zeros((0, 3)), "b": np.zeros((0, 2))}, "N >= 1"),
        ({"a": np.array([[0.5, 0.5]]), "b": np.array([[1.0, 0.0]])}, "expected shape (1, 3), got (1, 2)"),
        ({"a": np.array([[2.0, -1.0, 0.3]]), "b": np.array([[1.0, 0.0]])}, "not the logits"),
        ({"a": np.array([[np.nan, 0.5, 0.5]]), "b": np.array([[1.0, 0.0]])}, "NaN"),
        ({"a": np.array([[1.0, 0.0, 0.0]]), "b": np.array([[1.0, 0.0]]), "c": np.ones((1, 2))}, "unknown group 'c'"),
    ],
)
def test_bad_probabilities_fail_fast(probs: dict[str, np.ndarray], fragment: str) -> None:
    with pytest.raises(AttrtagError) as info:
        score_classes(probs, RULES, SCHEMA)
    assert fragment in str(info.value)


def test_unscorable_rules_and_parameters_fail_fast() -> None:
    empty_class = Rules.from_dict({"classes": {"A": {"a": "x"}, "ghost": {}}}, SCHEMA)
    with pytest.raises(AttrtagError, match="class 'ghost' constrains no group"):
        score_classes(PROBS, empty_class, SCHEMA)
    other_schema = Schema.from_dict({"a": ["x", "y", "w"], "b": ["p", "q"]})
    with pytest.raises(AttrtagError, match="unknown value 'z'"):
        score_classes(PROBS, RULES, other_schema)
    with pytest.raises(AttrtagError, match="temperature"):
        score_classes(PROBS, RULES, SCHEMA, temperature=0.0)
    with pytest.raises(AttrtagError, match="top_k"):
        score_classes(PROBS, RULES, SCHEMA, top_k=0)


# -- metrics ---------------------------------------------------------------------------------


def test_accuracy_is_averaged_per_class() -> None:
    scores = np.array([[1.0, 0.0], [0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    labels = np.array([0, 0, 0, 1])
    # class 0: 2 of 3 right; class 1: 0 of 1 -> (2/3 + 0) / 2, not 2/4 over images.
    assert per_class_accuracy(scores, labels) == pytest.approx((2 / 3 + 0) / 2)
    # Ties go to the lower index; -1 labels are skipped.
    assert per_class_accuracy(np.array([[0.5, 0.5], [0.5, 0.5], [9.0, 0.0]]), np.array([0, 1, -1])) == 0.5


def test_zsl_restricts_candidates_to_unseen_classes() -> None:
    scores = np.array(
        [
            [10, 6, 5, 4, 3, 2, 1],  # label 6: last of six unseen -> top-1 and top-5 miss
            [10, 6, 5, 4, 3, 2, 1],  # label 1: best unseen although seen class 0 scores higher
            [10, 6, 5, 4, 3, 2, 1],  # label 5: fifth of six unseen -> top-5 hit only
            [10, 6, 5, 4, 3, 2, 1],  # label 0: a seen class, not evaluated
        ],
        dtype=float,
    )
    labels = np.array([6, 1, 5, 0])
    result = evaluate_zsl(scores, labels, unseen=[1, 2, 3, 4, 5, 6])
    assert result.top1 == pytest.approx((0 + 1 + 0) / 3)
    assert result.top5 == pytest.approx((0 + 1 + 1) / 3)


# Seen classes 0, 1; unseen 2, 3. Seen scores sit a little above the unseen ones, so without
# calibration every unseen image is taken for a seen class.
SEEN, UNSEEN = [0, 1], [2, 3]
VAL_SCORES = np.array(
    [
        [0.0, -1.0, -0.5, -2.0],  # label 0; best seen - best unseen = 0.5
        [-1.0, 0.0, -2.0, -0.4],  # label 1; gap 0.4
        [-0.2, -3.0, -0.3, -2.0],  # label 2; gap 0.1
        [-3.0, -0.1, -2.0, -0.25],  # label 3; gap 0.15
    ]
)
VAL_LABELS = np.array([0, 1, 2, 3])
TEST_SCORES = np.array(
    [
        [0.0, -1.0, -0.1, -2.0],  # label 0; gap 0.1: lost once gamma > 0.1
        [-1.0, 0.0, -2.0, -0.5],  # label 1; gap 0.5
        [-0.2, -3.0, -0.3, -2.0],  # label 2; gap 0.1
        [-3.0, -0.1, -2.0, -0.25],  # label 3; gap 0.15
    ]
)
TEST_LABELS = np.array([0, 1, 2, 3])


def test_gzsl_collapses_onto_seen_classes_without_calibration() -> None:
    result = evaluate_gzsl(VAL_SCORES, VAL_LABELS, SEEN, UNSEEN)
    assert (result.seen, result.unseen, result.harmonic) == (1.0, 0.0, 0.0)
    assert harmonic_mean(0.5, 1.0) == pytest.approx(2 * 0.5 * 1.0 / 1.5)


def test_choose_gamma_finds_the_interval_that_maximises_h() -> None:
    # H = 1 exactly when 0.15 < gamma < 0.4 (both unseen right, both seen kept): the midpoint.
    assert choose_gamma(VAL_SCORES, VAL_LABELS, SEEN, UNSEEN) == pytest.approx((0.15 + 0.4) / 2)
    # On a grid, 0.2 and 0.3 both give H = 1; the one nearer 0 wins.
    assert choose_gamma(VAL_SCORES, VAL_LABELS, SEEN, UNSEEN, gammas=[0.0, 0.1, 0.2, 0.3, 0.45]) == 0.2


def test_calibration_raises_the_harmonic_mean_on_test() -> None:
    report = evaluate_gzsl_calibrated(VAL_SCORES, VAL_LABELS, TEST_SCORES, TEST_LABELS, SEEN, UNSEEN)
    assert (report.uncalibrated.seen, report.uncalibrated.unseen, report.uncalibrated.harmonic) == (1.0, 0.0, 0.0)
    # gamma = 0.275: image 0 (gap 0.1) goes to unseen class 2, image 1 stays, both unseen right.
    assert report.calibrated.gamma == pytest.approx(0.275)
    assert report.calibrated.seen == pytest.approx(0.5)
    assert report.calibrated.unseen == pytest.approx(1.0)
    assert report.calibrated.harmonic == pytest.approx(2 * 0.5 * 1.0 / (0.5 + 1.0))


def test_calibrated_stacking_only_moves_seen_columns() -> None:
    out = calibrated_stacking(VAL_SCORES, SEEN, 0.25)
    np.testing.assert_allclose(out[:, :2], VAL_SCORES[:, :2] - 0.25)
    np.testing.assert_array_equal(out[:, 2:], VAL_SCORES[:, 2:])
    assert VAL_SCORES[0, 0] == 0.0  # input untouched


@pytest.mark.parametrize(
    "labels, seen, unseen, fragment",
    [
        (VAL_LABELS, [0, 1], [1, 2], "both seen and unseen"),
        (np.array([0, 1, 0, 1]), SEEN, UNSEEN, "no image is labelled"),
        (np.array([0, 1, 2, 4]), SEEN, UNSEEN, "label 4 at row 3"),
        (VAL_LABELS, [0, 1], [2, 7], "class indices must be in [0, 4)"),
    ],
)
def test_metric_inputs_fail_fast(labels: np.ndarray, seen: list[int], unseen: list[int], fragment: str) -> None:
    with pytest.raises(AttrtagError) as info:
        evaluate_gzsl(VAL_SCORES, labels, seen, unseen)
    assert fragment in str(info.value)
