"""The scorer alone: a pure function of probabilities and given labels (no model, no files)."""
from __future__ import annotations

import numpy as np
import pytest

from attrtag.auditing.labels import score_manifest
from attrtag.auditing.scores import confident_learning, per_value_thresholds, score_labels, two_states
from attrtag.data.manifest import Sample
from attrtag.schema import Schema

# Five images of a 4-value group; image 3 is labelled 0 but the model is sure it is 2.
PROBS = np.array([[0.8, 0.1, 0.05, 0.05],
                  [0.1, 0.7, 0.1, 0.1],
                  [0.05, 0.05, 0.85, 0.05],
                  [0.1, 0.05, 0.8, 0.05],
                  [0.6, 0.3, 0.05, 0.05]])
GIVEN = np.array([0, 1, 2, 0, 0])


def test_self_confidence_scores_one_minus_the_given_probability_and_suggests_the_best_other() -> None:
    s = score_labels(PROBS, GIVEN)
    assert np.allclose(s.score, [0.2, 0.3, 0.15, 0.9, 0.4])
    assert s.suggested.tolist() == [1, 0, 0, 2, 1]
    assert np.allclose(s.p_suggested, [0.1, 0.1, 0.05, 0.8, 0.3])
    assert int(np.argmax(s.score)) == 3


def test_normalized_margin_ranks_by_the_best_other_minus_the_given() -> None:
    s = score_labels(PROBS, GIVEN, rank_by="normalized_margin")
    assert np.allclose(s.score, (np.array([0.1, 0.1, 0.05, 0.8, 0.3]) - [0.8, 0.7, 0.85, 0.1, 0.6] + 1) / 2)


def test_confident_learning_flags_a_label_when_another_value_reaches_its_own_threshold() -> None:
    t = per_value_thresholds(PROBS, GIVEN)
    assert np.allclose(t, [np.mean([0.8, 0.1, 0.6]), 0.7, 0.85, np.inf])  # value 3: no image labelled with it
    flagged, _, estimated = confident_learning(PROBS, GIVEN)
    # Image 3: 0.8 < 0.85 for value 2, but 0.1 < t0 too: no value is confident; image 4 is confidently 0.
    assert flagged.tolist() == [False, False, False, False, False] and estimated == 0.0
    sure = PROBS.copy()
    sure[3] = [0.02, 0.02, 0.94, 0.02]
    flagged, confident, estimated = confident_learning(sure, GIVEN)
    assert flagged.tolist() == [False, False, False, True, False] and confident[3] == 2
    # Value 0's row of the confident joint: 2 of its 3 confident images agree, scaled to 3 images.
    assert estimated == pytest.approx(3 * (1 / 3))
    assert score_labels(sure, GIVEN).suggested[3] == 2


def test_a_confident_other_value_less_probable_than_the_given_one_is_not_flagged() -> None:
    # Value 1's threshold is low (its one image gives it 0.1); value 0's is 0.75. Image 0
    # (labelled 0) clears only value 1's, with 0.35: plain confident learning would flag it, but
    # the given value is the more probable (0.6), so the label stands. Image 2 (labelled 1) is
    # confidently and more probably 0: flagged.
    probs = np.array([[0.6, 0.35, 0.05], [0.9, 0.05, 0.05], [0.85, 0.1, 0.05], [0.1, 0.1, 0.8]])
    given = np.array([0, 0, 1, 2])
    assert np.allclose(per_value_thresholds(probs, given), [0.75, 0.1, 0.8])
    flagged, confident, _ = confident_learning(probs, given)
    assert confident.tolist()[:3] == [1, 0, 0]
    assert flagged.tolist() == [False, False, True, False]


def test_a_multi_label_value_is_a_two_state_group() -> None:
    s = score_labels(two_states(np.array([0.9, 0.2, 0.95])), np.array([1, 1, 0]))
    assert np.allclose(s.score, [0.1, 0.8, 0.95]) and s.suggested.tolist() == [0, 0, 1]


def test_bad_arrays_are_refused() -> None:
    with pytest.raises(ValueError, match="rank_by"):
        score_labels(PROBS, GIVEN, rank_by="entropy")
    with pytest.raises(ValueError, match="given values"):
        score_labels(PROBS, np.array([0, 1, 2, 4, 0]))
    assert len(score_labels(np.zeros((0, 3)), np.zeros(0, np.int64))) == 0


def test_unknown_labels_and_images_without_a_prediction_are_not_scored() -> None:
    schema = Schema.from_dict({"c": ["a", "b"], "m": {"kind": "multi", "values": ["x", "y"]}})
    samples = [Sample("p0", (0, -1), multi={"m": (1, -1)}), Sample("p1", (-1, -1), multi={"m": (0, 0)}),
               Sample("p2", (1, -1)), Sample("p3", (1, -1), multi={"m": (1, 1)})]
    probs = {"c": np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8], [np.nan, np.nan]]),
             "m": np.array([[0.9, 0.5], [0.1, 0.2], [0.5, 0.5], [np.nan, np.nan]])}
    labels, summary = score_manifest(schema, samples, probs)
    assert sorted((x.path, x.group, x.value) for x in labels) == [
        ("p0", "c", None), ("p0", "m", "x"), ("p1", "m", "x"), ("p1", "m", "y"), ("p2", "c", None)]
    assert [(s.group, s.checked) for s in summary] == [("c", 2), ("m", 3)]
    assert [x.score for x in labels] == sorted((x.score for x in labels), reverse=True)
    m = {x.value + x.path: x for x in labels if x.group == "m"}
    assert (m["yp1"].label, m["yp1"].suggested, m["yp1"].p_label) == ("absent", "present", pytest.approx(0.8))


def test_planted_multi_label_errors_rank_first_and_nothing_else_is_flagged() -> None:
    # 30 images, 3 marks each known present/absent; a model right about the truth, with noise; three
    # given states flipped (two present -> absent, one absent -> present), the rest unknown on some.
    rng = np.random.default_rng(7)
    schema = Schema.from_dict({"m": {"kind": "multi", "values": ["dot", "bar", "ring"]}})
    truth = rng.random((30, 3)) < 0.4
    probs = np.where(truth, rng.uniform(0.75, 0.95, truth.shape), rng.uniform(0.05, 0.25, truth.shape))
    given = truth.astype(int)
    planted = {(2, 0), (11, 1), (23, 2)}
    for i, v in planted:
        given[i, v] = 1 - given[i, v]
    unknown = rng.random(given.shape) < 0.2
    unknown[[i for i, _ in planted], [v for _, v in planted]] = False
    samples = [Sample(f"p{i}", (), multi={"m": tuple(-1 if unknown[i, v] else int(given[i, v]) for v in range(3))})
               for i in range(30)]
    labels, summary = score_manifest(schema, samples, {"m": probs})
    values = ["dot", "bar", "ring"]
    top = {(int(x.path[1:]), values.index(x.value)) for x in labels[:3]}
    assert top == planted
    # Flagged: a subset, since confident learning needs the other state above its class's mean confidence.
    flagged = {(int(x.path[1:]), values.index(x.value)) for x in labels if x.flagged}
    assert flagged and flagged <= planted
    assert summary[0].checked == int((~unknown).sum())  # every known state checked, no unknown one
