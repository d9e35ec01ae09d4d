import math

import pytest
import torch
import torch.nn.functional as F

from attrtag.data.manifest import Sample, label_counts
from attrtag.training.loss import MaskedGroupedCrossEntropy, class_weights_from_counts
from attrtag.schema import Schema

SCHEMA = Schema.from_dict({"a": ["x", "y", "z"], "b": ["p", "q"], "c": [f"v{i}" for i in range(7)]})


def logits(batch=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(batch, k, generator=g, requires_grad=True) for n, k in zip(SCHEMA.names, SCHEMA.sizes)}


def test_matches_cross_entropy_on_labelled_rows_only():
    lg = logits()
    t = torch.tensor([[0, -1, 6], [2, 1, -1], [-1, -1, 3], [1, 0, -1], [-1, 1, 0], [2, -1, -1]])
    out = MaskedGroupedCrossEntropy(SCHEMA)(lg, t)
    for j, n in enumerate(SCHEMA.names):
        keep = t[:, j] >= 0
        ref = F.cross_entropy(lg[n][keep], t[keep, j])
        assert torch.allclose(out[n], ref), n
    assert torch.allclose(out["loss"], out["a"] + out["b"] + out["c"])


def test_unlabelled_group_is_exact_zero_and_keeps_every_parameter_in_the_graph():
    lg = logits()
    t = torch.full((6, 3), -1)
    t[:, 0] = torch.tensor([0, 1, 2, 0, 1, 2])
    out = MaskedGroupedCrossEntropy(SCHEMA, label_smoothing=0.1)(lg, t)
    assert out["b"].item() == 0.0 and out["c"].item() == 0.0
    assert all(math.isfinite(v.item()) for v in out.values())
    out["loss"].backward()
    # Every group's logits get a gradient tensor (zeros for the unlabelled ones): DDP-safe.
    assert lg["b"].grad is not None and torch.count_nonzero(lg["b"].grad) == 0
    assert torch.count_nonzero(lg["a"].grad) > 0


def test_whole_batch_without_labels_is_zero_not_nan():
    lg = logits()
    out = MaskedGroupedCrossEntropy(SCHEMA)(lg, torch.full((6, 3), -1))
    assert out["loss"].item() == 0.0
    out["loss"].backward()


def test_group_and_class_weights_and_smoothing():
    lg = logits()
    t = torch.tensor([[0, 1, 2], [2, 0, 2], [1, 1, 5], [1, 0, 1], [0, 1, 0], [2, 0, 6]])
    cw = torch.tensor([1.0, 2.0, 0.5])
    out = MaskedGroupedCrossEntropy(SCHEMA, group_weights={"b": 3.0}, class_weights={"a": cw}, label_smoothing=0.2)(lg, t)
    assert torch.allclose(out["a"], F.cross_entropy(lg["a"], t[:, 0], weight=cw, label_smoothing=0.2))
    assert torch.allclose(out["b"], 3.0 * F.cross_entropy(lg["b"], t[:, 1], label_smoothing=0.2))
    with pytest.raises(ValueError, match="unknown groups"):
        MaskedGroupedCrossEntropy(SCHEMA, group_weights={"nope": 1.0})


def test_class_weights_from_labelled_counts_only():
    rows = [(0, -1, -1), (0, -1, -1), (0, 1, -1), (2, 1, -1), (-1, 0, -1)]
    counts = label_counts(SCHEMA, [Sample(f"{i}.png", r) for i, r in enumerate(rows)])
    first = list(counts)[0]
    assert list(counts.values())[:2] == [(3, 0, 1), (1, 2)] and sum(list(counts.values())[2]) == 0
    w = class_weights_from_counts(torch.tensor(counts[first]))
    assert w[1] == 0 and w[2] > w[0] and torch.isclose(w[w > 0].mean(), torch.tensor(1.0))


def test_sigmoid_baseline_masks_missing_groups():
    from attrtag.training.loss import MaskedSigmoidBCE

    lg = logits()
    t = torch.tensor([[0, -1, 6], [2, -1, -1], [-1, -1, 3], [1, -1, -1], [-1, -1, 0], [2, -1, -1]])
    out = MaskedSigmoidBCE(SCHEMA)(lg, t)
    keep = t[:, 0] >= 0
    ref = F.binary_cross_entropy_with_logits(lg["a"][keep], F.one_hot(t[keep, 0], 3).float())
    assert torch.allclose(out["a"], ref) and out["b"].item() == 0.0
    out["loss"].backward()
    assert lg["b"].grad is not None


def test_shares_over_global_label_counts_add_up_to_the_whole_batch():
    # Under DDP each process divides by the label counts of the global batch: the shares (and
    # their gradients) must add up to the whole batch's loss, even where a part has no label.
    lg = logits(batch=6, seed=3)
    t = torch.tensor([[0, 1, 6], [2, 0, -1], [1, -1, 3], [-1, -1, -1], [2, -1, -1], [0, -1, -1]])
    cw = torch.tensor([0.5, 2.0, 1.0])
    crit = MaskedGroupedCrossEntropy(SCHEMA, class_weights={"a": cw}, label_smoothing=0.1)
    whole = crit(lg, t)
    den = crit.denominators(t[:3]) + crit.denominators(t[3:])  # what the all-reduce sums
    assert torch.equal(den, crit.denominators(t)) and den[0] == cw[[0, 2, 1, 2, 0]].sum()
    parts = [crit({n: v[rows] for n, v in lg.items()}, t[rows], den) for rows in (slice(0, 3), slice(3, 6))]
    assert parts[1]["b"].item() == 0.0 and parts[1]["c"].item() == 0.0  # this half has no label there
    for key in ("loss", *SCHEMA.names):
        assert torch.allclose(parts[0][key] + parts[1][key], whole[key]), key
    g_whole = torch.autograd.grad(whole["loss"], list(lg.values()))
    g_parts = torch.autograd.grad(parts[0]["loss"] + parts[1]["loss"], list(lg.values()))
    assert all(torch.allclose(a, b) for a, b in zip(g_whole, g_parts))
    zero = crit(lg, torch.full((6, 3), -1), torch.zeros(3))  # a global count of 0: zero, never NaN
    assert zero["loss"].item() == 0.0
