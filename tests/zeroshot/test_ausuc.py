"""The seen-unseen curve and its area (AUSUC), against a curve drawn by hand and against evaluate_gzsl."""
from __future__ import annotations

import numpy as np
import pytest

from attrtag.errors import AttrtagError
from attrtag.zeroshot.metrics import ausuc, choose_gamma, evaluate_gzsl, seen_unseen_curve

# Seen classes 0, 1; unseen 2, 3. Per image: its best seen and best unseen class, and the gap
# (best seen - best unseen) above which calibrated stacking hands it to the unseen side.
SEEN, UNSEEN = [0, 1], [2, 3]
SCORES = np.array(
    [
        [0.0, -1.0, -0.6, -2.0],  # a: label 0, seen side right, gap 0.6
        [-1.0, 0.0, -2.0, -0.2],  # b: label 1, seen side right, gap 0.2
        [-0.2, -2.0, -0.5, -1.0],  # c: label 2, unseen side right, gap 0.3
        [-2.0, -0.1, -1.0, -0.2],  # d: label 3, unseen side right, gap 0.1
        [-2.0, 0.0, -0.5, -3.0],  # e: label 3, unseen side wrong (picks 2), gap 0.5
    ]
)
LABELS = np.array([0, 1, 2, 3, 3])
# Per-class weights: a, b: 1/2 each (two seen classes of one image); c: 1/2; d, e: 1/4.
# gamma below 0.1: S = 1, U = 0; (0.1, 0.2): d moves, U = 1/4; (0.2, 0.3): b moves, S = 1/2;
# (0.3, 0.5): c moves, U = 3/4; (0.5, 0.6): e moves, still wrong; above 0.6: a moves, S = 0.
CURVE_S = [1.0, 1.0, 0.5, 0.5, 0.5, 0.0]
CURVE_U = [0.0, 0.25, 0.25, 0.75, 0.75, 0.75]
# Trapezoids over (U, S): 0.25 * 1 + 0 + 0.5 * 0.5 + 0 + 0 = 0.5.
AREA = 0.5


def test_curve_and_area_match_the_hand_drawn_curve() -> None:
    curve = seen_unseen_curve(SCORES, LABELS, SEEN, UNSEEN)
    np.testing.assert_allclose(curve.seen, CURVE_S)
    np.testing.assert_allclose(curve.unseen, CURVE_U)
    np.testing.assert_allclose(curve.gammas[1:-1], [0.15, 0.25, 0.4, 0.55])
    assert curve.gammas[0] < 0.1 and curve.gammas[-1] > 0.6
    assert curve.area == pytest.approx(AREA)
    assert ausuc(SCORES, LABELS, SEEN, UNSEEN) == pytest.approx(AREA)
    # H peaks at 0.6 in (0.3, 0.5) and (0.5, 0.6); the gamma nearer 0 is chosen.
    np.testing.assert_allclose(curve.harmonic.max(), 2 * 0.5 * 0.75 / 1.25)
    assert choose_gamma(SCORES, LABELS, SEEN, UNSEEN) == pytest.approx(0.4)


def test_a_perfect_model_has_area_1_and_a_hopeless_one_0() -> None:
    perfect = np.eye(4)
    assert ausuc(perfect, np.arange(4), SEEN, UNSEEN) == pytest.approx(1.0)
    inverted = 1.0 - np.eye(4)  # the true class always scores lowest
    assert ausuc(inverted, np.arange(4), SEEN, UNSEEN) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_curve_agrees_with_evaluate_gzsl_at_every_gamma(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Integer scores: many exact ties, within a side and between seen and unseen.
    scores = rng.integers(0, 4, size=(60, 7)).astype(float)
    labels = rng.integers(-1, 7, size=60)
    seen, unseen = [0, 2, 5], [1, 3, 4, 6]
    curve = seen_unseen_curve(scores, labels, seen, unseen, gammas=[-5.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, 9.0])
    for g, s, u in zip(curve.gammas, curve.seen, curve.unseen):
        want = evaluate_gzsl(scores, labels, seen, unseen, gamma=g)
        assert (s, u) == pytest.approx((want.seen, want.unseen)), f"gamma {g}"
    auto = seen_unseen_curve(scores, labels, seen, unseen)
    assert np.all(np.diff(auto.unseen) >= -1e-12) and np.all(np.diff(auto.seen) <= 1e-12)
    for g, s, u in zip(auto.gammas, auto.seen, auto.unseen):
        want = evaluate_gzsl(scores, labels, seen, unseen, gamma=g)
        assert (s, u) == pytest.approx((want.seen, want.unseen))


def test_curve_needs_images_of_both_sides() -> None:
    with pytest.raises(AttrtagError, match="unseen classes"):
        seen_unseen_curve(SCORES, np.array([0, 1, 0, 1, 1]), SEEN, UNSEEN)
    with pytest.raises(AttrtagError, match="finite"):
        seen_unseen_curve(SCORES, LABELS, SEEN, UNSEEN, gammas=[float("nan")])
