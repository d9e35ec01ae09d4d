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


def test_logit_adjustment_is_tau_log_prior_added_in_the_loss_only():
    from attrtag.training.loss import logit_adjustment

    counts = torch.tensor([90, 9, 1, 0, 0, 0, 0])  # group c (7 values): two never labelled
    off = logit_adjustment(counts, 0.5)
    prior = torch.tensor([90, 9, 1, 1, 1, 1, 1], dtype=torch.float64)  # unseen values count as one
    assert torch.allclose(off.double(), 0.5 * torch.log(prior / prior.sum()), atol=1e-6)
    lg = logits(seed=4)
    t = torch.tensor([[0, 1, 2], [2, -1, 0], [1, 0, -1], [-1, 1, 6], [0, -1, 0], [2, 0, 1]])
    crit = MaskedGroupedCrossEntropy(SCHEMA, logit_offsets={"c": off})
    out = crit(lg, t)
    keep = t[:, 2] >= 0
    assert torch.allclose(out["c"], F.cross_entropy(lg["c"][keep] + off, t[keep, 2]))
    assert torch.allclose(out["a"], MaskedGroupedCrossEntropy(SCHEMA)(lg, t)["a"])  # other groups untouched
    assert torch.allclose(crit.probabilities("c", lg["c"]), torch.softmax(lg["c"] + off, 1))
    sig = logit_adjustment(torch.tensor([3, 1]), 1.0, sigmoid=True)  # log-odds of the prior
    assert torch.allclose(sig, torch.log(torch.tensor([3.0, 1 / 3])), atol=1e-6)


def test_logit_adjusted_training_balances_what_the_plain_softmax_predicts():
    # Features that say nothing: the best logits are the prior's log without adjustment, and
    # flat with tau = 1 (Menon et al. 2021), so the rare value's probability rises to 1/n.
    from attrtag.training.loss import logit_adjustment

    schema = Schema.from_dict({"g": ["common", "middle", "rare"]})
    targets = torch.tensor([0] * 90 + [1] * 9 + [2] * 1).unsqueeze(1)
    probs = {}
    for tau in (0.0, 1.0):
        z = torch.zeros(1, 3, requires_grad=True)
        crit = MaskedGroupedCrossEntropy(schema, logit_offsets={"g": logit_adjustment(torch.tensor([90, 9, 1]), tau)})
        opt = torch.optim.SGD([z], lr=5.0)
        for _ in range(500):
            opt.zero_grad()
            crit({"g": z.expand(100, 3)}, targets)["loss"].backward()
            opt.step()
        probs[tau] = torch.softmax(z.detach(), 1)[0]
    assert torch.allclose(probs[0.0], torch.tensor([0.90, 0.09, 0.01]), atol=2e-3)
    assert torch.allclose(probs[1.0], torch.full((3,), 1 / 3), atol=2e-3)


def test_filled_labels_join_the_mean_and_the_shares_still_add_up():
    lg = logits(batch=6, seed=5)
    t = torch.tensor([[0, 1, 6], [2, -1, -1], [-1, -1, 3], [-1, 0, -1], [2, -1, -1], [-1, -1, -1]])
    g = torch.Generator().manual_seed(1)
    soft = torch.softmax(torch.randn(6, 3, generator=g), 1)
    w = torch.tensor([0.0, 0.0, 0.5, 1.0, 0.0, 1.0])  # filled where 'a' is missing
    cw = torch.tensor([0.5, 2.0, 1.0])
    crit = MaskedGroupedCrossEntropy(SCHEMA, class_weights={"a": cw})
    filled = {"a": (soft, w)}
    out = crit(lg, t, filled=filled)
    logq = torch.log_softmax(lg["a"], 1)
    given = [0, 1, 4]
    num = sum(-cw[t[i, 0]] * logq[i, t[i, 0]] for i in given) + sum(-w[i] * (cw * soft[i] * logq[i]).sum() for i in range(6))
    den = cw[t[given, 0]].sum() + (w * (soft @ cw)).sum()
    assert torch.allclose(out["a"], num / den)
    assert torch.allclose(crit.denominators(t, filled)[0], den)
    assert torch.equal(crit.denominators(t, filled)[1:], crit.denominators(t)[1:])
    # Under DDP each part divides by the global counts (given + filled): the parts add up.
    den_all = crit.denominators(t[:3], {"a": (soft[:3], w[:3])}) + crit.denominators(t[3:], {"a": (soft[3:], w[3:])})
    parts = [crit({n: v[r] for n, v in lg.items()}, t[r], den_all, {"a": (soft[r], w[r])}) for r in (slice(0, 3), slice(3, 6))]
    assert torch.allclose(parts[0]["loss"] + parts[1]["loss"], out["loss"])
    hard = F.one_hot(soft.argmax(1), 3).float()
    as_given = t.clone()
    as_given[w > 0, 0] = soft.argmax(1)[w > 0]
    ones = torch.where(w > 0, torch.ones_like(w), torch.zeros_like(w))
    assert torch.allclose(crit(lg, t, filled={"a": (hard, ones)})["a"], crit(lg, as_given)["a"])  # hard = given


def test_log_group_balance_gives_each_group_the_same_starting_loss():
    from attrtag.training.loss import log_size_weights

    sizes = [2, 43, 7]
    w = log_size_weights(sizes)
    assert sum(w) / 3 == pytest.approx(1.0)
    # A uniform prediction costs log(n): after weighting every group starts at the same value.
    starts = [wi * math.log(n) for wi, n in zip(w, sizes)]
    assert max(starts) == pytest.approx(min(starts)) and w[0] > w[2] > w[1]


def test_the_sigmoid_baseline_takes_filled_labels_and_offsets_too():
    from attrtag.training.loss import MaskedSigmoidBCE

    lg = logits(seed=6)
    t = torch.tensor([[0, -1, 6], [-1, -1, -1], [-1, -1, 3], [1, -1, -1], [-1, -1, 0], [2, -1, -1]])
    off = torch.tensor([0.3, -0.2, 0.1])
    crit = MaskedSigmoidBCE(SCHEMA, logit_offsets={"a": off})
    probs = torch.full((6, 3), 0.2)
    w = torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    out = crit(lg, t, filled={"a": (probs, w)})
    x = lg["a"] + off
    ref_given = F.binary_cross_entropy_with_logits(x[[0, 3, 5]], F.one_hot(t[[0, 3, 5], 0], 3).float(), reduction="sum") / 3
    ref_filled = F.binary_cross_entropy_with_logits(x[[1, 4]], probs[[1, 4]], reduction="sum") / 3
    assert torch.allclose(out["a"], (ref_given + ref_filled) / 5)
    assert torch.allclose(crit.probabilities("a", lg["a"]), torch.sigmoid(x))
