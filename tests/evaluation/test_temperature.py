"""Temperature scaling from probabilities: the fit, the ECE, applying it, moving thresholds with it."""
from __future__ import annotations

import numpy as np
import pytest

from attrtag.evaluation.calibrate import map_thresholds
from attrtag.evaluation.temperature import (
    MAX_T, MIN_T, apply_temperature, expected_calibration_error, fit_temperature, fit_temperatures, reliability,
)
from attrtag.runtime.temperature import apply_temperatures
from attrtag.schema import Schema

SCHEMA = Schema.from_dict({"colour": ["a", "b", "c", "d", "e"], "marks": {"kind": "multi", "values": ["x", "y", "z"]}})


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def overconfident(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z) / sigmoid(z), probabilities reported as if at T = 0.5: a model
    twice too sure, whose right temperature is 2."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, (n, 5))
    y = (softmax(z).cumsum(1) < rng.random((n, 1))).sum(1)  # one draw per row
    zm = rng.normal(0, 2, (n, 3))
    ym = (rng.random((n, 3)) < sigmoid(zm)).astype(np.int64)
    return softmax(z / 0.5).astype(np.float32), y, sigmoid(zm / 0.5).astype(np.float32), ym


def test_the_fit_recovers_the_temperature_of_an_overconfident_model_and_the_ece_drops() -> None:
    p, y, pm, ym = overconfident()
    t = fit_temperature(p, y, multi=False)
    tm = fit_temperature(pm, ym, multi=True)
    assert t == pytest.approx(2.0, rel=0.08) and tm == pytest.approx(2.0, rel=0.08)
    before, after = expected_calibration_error(p, y, multi=False), expected_calibration_error(
        apply_temperature(p, t, multi=False), y, multi=False)
    assert before > 0.1 and after < 0.03 and after < before / 4
    before_m = expected_calibration_error(pm, ym, multi=True)
    after_m = expected_calibration_error(apply_temperature(pm, tm, multi=True), ym, multi=True)
    assert before_m > 0.06 and after_m < 0.03


def test_an_underconfident_model_gets_a_temperature_below_one() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(0, 3, (3000, 5))
    y = (softmax(z).cumsum(1) < rng.random((3000, 1))).sum(1)
    assert fit_temperature(softmax(z / 2.5), y, multi=False) == pytest.approx(0.4, rel=0.1)


def test_unlabelled_rows_and_values_are_ignored() -> None:
    p, y, pm, ym = overconfident(1000)
    rng = np.random.default_rng(2)
    noise = softmax(rng.normal(0, 9, (500, 5))).astype(np.float32)  # anything at all, unlabelled
    t = fit_temperature(np.concatenate([p, noise]), np.concatenate([y, -np.ones(500, np.int64)]), multi=False)
    assert t == pytest.approx(fit_temperature(p, y, multi=False), rel=1e-6)
    hidden = ym.copy()
    hidden[::2, 0] = -1  # values unknown in some images: their probabilities must not count
    junk = pm.copy()
    junk[::2, 0] = 0.999
    assert fit_temperature(junk, hidden, multi=True) == pytest.approx(fit_temperature(pm, hidden, multi=True), rel=1e-6)
    assert expected_calibration_error(junk, hidden, multi=True) == pytest.approx(
        expected_calibration_error(pm, hidden, multi=True))


def test_no_label_means_no_temperature_and_the_search_is_bounded() -> None:
    p, y, _, _ = overconfident(200)
    assert fit_temperature(p, -np.ones_like(y), multi=False) == 1.0
    assert expected_calibration_error(p, -np.ones_like(y), multi=False) is None
    certain = np.eye(5, dtype=np.float32)[y] * 0.9 + 0.02  # always right: sharper is always better
    assert MIN_T <= fit_temperature(certain, y, multi=False) < 0.5
    assert MIN_T <= fit_temperature(np.full((200, 5), 0.2, np.float32), y, multi=False) <= MAX_T


def test_a_few_images_all_right_do_not_drive_the_temperature_to_its_bound() -> None:
    y = np.arange(18) % 3
    right = np.eye(5, dtype=np.float32)[y] * 0.6 + 0.08  # 18 images, each right at 0.68
    t = fit_temperature(right, y, multi=False)
    assert 0.2 < t < 1.0  # sharper, as 18 right answers say, but not to MIN_T (probabilities of 1)
    many = np.tile(right, (100, 1))
    assert fit_temperature(many, np.tile(y, 100), multi=False) < t  # more evidence, less prior


def test_temperature_one_is_the_identity_and_any_temperature_keeps_the_argmax() -> None:
    p, _, pm, _ = overconfident(300)
    assert apply_temperature(p, 1.0, multi=False) is p and apply_temperature(pm, 1.0, multi=True) is pm
    for t in (0.3, 2.7):
        q = apply_temperature(p, t, multi=False)
        assert q.dtype == np.float32 and np.allclose(q.sum(1), 1, atol=1e-6)
        assert (q.argmax(1) == p.argmax(1)).all()
        qm = apply_temperature(pm, t, multi=True)
        assert ((qm >= 0.5) == (pm >= 0.5)).all() and qm.dtype == np.float32
    back = apply_temperature(apply_temperature(p, 2.0, multi=False), 0.5, multi=False)  # scaling composes
    assert np.allclose(back, p, atol=1e-5)
    zero = np.array([[1.0, 0.0, 0.0, 0.0, 0.0]], np.float32)  # float32 softmax underflows to 0: no NaN
    assert np.isfinite(apply_temperature(zero, 3.0, multi=False)).all()


def test_the_ece_and_its_bins_by_hand() -> None:
    # Two bins used: confidence 0.9 (3 right of 4) and 0.62 (1 right of 2) -> |0.75-0.9|*4/6 + |0.5-0.62|*2/6.
    p = np.array([[0.9, 0.1]] * 4 + [[0.38, 0.62]] * 2, np.float32)
    y = np.array([0, 0, 0, 1, 1, 0])
    rel = reliability(p, y, multi=False)
    assert rel.ece == pytest.approx(0.15 * 4 / 6 + 0.12 * 2 / 6, abs=1e-6)
    assert rel.counts.sum() == 6 and rel.counts[13] == 4 and rel.counts[9] == 2 and len(rel.edges) == 16
    assert rel.accuracy[13] == pytest.approx(0.75) and rel.confidence[9] == pytest.approx(0.62)
    assert np.isnan(rel.accuracy[0])  # an empty bin has no accuracy
    # Multi-label: each known pair's probability against its presence.
    assert expected_calibration_error(np.array([[0.2, 0.8]]), np.array([[0, 1]]), multi=True) == pytest.approx(0.2)


def test_fit_temperatures_leaves_out_groups_without_labels_and_applies_by_group() -> None:
    p, y, pm, ym = overconfident(500)
    targets = np.concatenate([y[:, None], -np.ones((500, 1), np.int64), ym], axis=1)  # Schema.multi_slices
    entry = fit_temperatures(SCHEMA, {"colour": p, "marks": pm}, targets, fitted_on="test")
    assert set(entry["groups"]) == {"colour", "marks"} and entry["fitted_on"] == "test"
    targets[:, 0] = -1
    assert set(fit_temperatures(SCHEMA, {"colour": p, "marks": pm}, targets)["groups"]) == {"marks"}
    out = apply_temperatures({"colour": p, "marks": pm}, SCHEMA, {"marks": 2.0})
    assert out["colour"] is p and np.allclose(out["marks"], apply_temperature(pm, 2.0, multi=True))


def test_thresholds_moved_to_new_temperatures_decide_every_value_as_before() -> None:
    rng = np.random.default_rng(3)
    z = rng.normal(0, 3, (2000, 3))
    old, new = {"marks": 0.7}, {"marks": 2.3}
    entry = {"groups": {"marks": {"x": 0.2, "y": 0.5, "z": 0.83}}, "chosen_on": "val"}
    moved = map_thresholds(entry, old, new)
    assert moved["chosen_on"] == "val" and moved["groups"]["marks"]["y"] == pytest.approx(0.5)
    t_old = np.array(list(entry["groups"]["marks"].values()))
    t_new = np.array(list(moved["groups"]["marks"].values()))
    assert ((sigmoid(z / 0.7) >= t_old) == (sigmoid(z / 2.3) >= t_new)).all()
    assert not np.allclose(t_old, t_new)
