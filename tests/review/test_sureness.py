"""How sure a record is: exclusive top probabilities and multi-label values on one scale."""
from __future__ import annotations

import numpy as np
import pytest

from attrtag.review.sureness import decision_sureness, group_sureness, least_sure, value_sureness
from attrtag.tagging import RecordLayout
from tests.helpers import MULTI_SCHEMA


@pytest.mark.parametrize("p, t, present, want", [
    (0.8, 0.5, True, 0.8), (0.2, 0.5, False, 0.8),    # at t = 0.5: the probability of the decision taken
    (0.9, 0.9, True, 0.5), (0.1, 0.1, True, 0.5),     # right on the threshold, whatever it is
    (0.95, 0.9, True, 0.75), (0.45, 0.9, False, 0.75),  # half way to certainty, on either side
    (1.0, 0.3, True, 1.0), (0.0, 0.3, False, 1.0),
    (1.0, 1.0, True, 1.0), (0.0, 0.0, False, 1.0),    # a threshold at 0 or 1 leaves nothing to doubt
])
def test_a_value_is_as_sure_as_its_distance_from_the_threshold(p: float, t: float, present: bool, want: float) -> None:
    assert decision_sureness(p, t, present) == pytest.approx(want)


def layout(top_k: int | None = None) -> RecordLayout:
    return RecordLayout(MULTI_SCHEMA, top_k=top_k, value_thresholds={"marks": (0.2, 0.5, 0.9)})


def record(marks: list[float], colour: float = 0.9, top_k: int | None = None) -> dict:
    probs = {"colour": np.array([[colour, (1 - colour) / 2, (1 - colour) / 2]]),
             "shape": np.array([[0.94] + [0.01] * 6]), "band": np.array([[0.99, 0.01]]), "marks": np.array([marks])}
    return layout(top_k).records(["a.jpg"], probs)[0]


def test_a_multi_label_group_is_as_sure_as_its_least_sure_value() -> None:
    rec = record([0.25, 0.99, 0.85])  # dot present just above 0.2, bar surely present, ring absent near 0.9
    assert rec["marks"] == ["dot", "bar"]
    got = value_sureness(layout(), rec, MULTI_SCHEMA["marks"])
    assert got == pytest.approx({"dot": 0.5 + 0.5 * 0.05 / 0.8, "bar": 0.99, "ring": 0.5 + 0.5 * 0.05 / 0.9})
    assert group_sureness(layout(), rec, MULTI_SCHEMA["marks"]) == pytest.approx(min(got.values()))
    assert least_sure(layout(), rec) == ("marks", pytest.approx(0.5 + 0.5 * 0.05 / 0.9))


def test_an_exclusive_group_is_as_sure_as_its_top_probability() -> None:
    rec = record([0.0, 1.0, 0.0], colour=0.55)
    assert least_sure(layout(), rec) == ("colour", 0.55)


def test_values_without_a_probability_do_not_count() -> None:
    rec = record([0.21, 0.99, 0.0], top_k=1)  # dot (present, barely) has no probability with top_k=1
    assert rec["marks"] == ["dot", "bar"] and set(rec["marks_probs"]) == {"bar"}
    assert value_sureness(layout(1), rec, MULTI_SCHEMA["marks"]) == {"bar": pytest.approx(0.99)}
