"""Label completion: the EMA teacher fills missing labels only, when confident, more as training goes."""
import pytest
import torch

from attrtag.schema import Schema
from attrtag.training.completion import curriculum_threshold, fill_labels
from attrtag.training.config import TrainConfig
from attrtag.training.loss import MaskedGroupedCrossEntropy, MaskedSigmoidBCE, logit_adjustment

SCHEMA = Schema.from_dict({"a": ["x", "y", "z"], "b": ["p", "q"], "c": [f"v{i}" for i in range(5)]})


def teacher(batch=8, seed=0, scale=4.0):
    g = torch.Generator().manual_seed(seed)
    return {n: scale * torch.randn(batch, k, generator=g) for n, k in zip(SCHEMA.names, SCHEMA.sizes)}


def test_completion_fills_only_missing_labels_and_never_overrides_a_given_one():
    lg = teacher()
    # Given labels chosen to contradict the teacher wherever they are given.
    y = torch.stack([(lg[n].argmax(1) + 1) % k for n, k in zip(SCHEMA.names, SCHEMA.sizes)], 1)
    y[::2, 0] = -1
    y[1::3, 2] = -1
    crit = MaskedGroupedCrossEntropy(SCHEMA)
    for mode in ("hard", "soft"):
        filled = fill_labels(crit, lg, y, mode=mode, threshold=0.0, weight=0.7)
        for j, name in enumerate(SCHEMA.names):
            probs, w = filled[name]
            assert torch.equal(w > 0, y[:, j] == -1), (mode, name)  # every missing one, no given one
            assert torch.all(w[w > 0] == 0.7)
            expected = torch.softmax(lg[name], 1)
            if mode == "hard":
                expected = torch.nn.functional.one_hot(expected.argmax(1), len(SCHEMA[name])).float()
            assert torch.allclose(probs, expected)
        assert torch.equal(y[1::2, 0], ((lg["a"].argmax(1) + 1) % 3)[1::2])  # targets themselves untouched


def test_only_confident_predictions_are_filled():
    lg = teacher(batch=64, scale=2.0)
    y = torch.full((64, 3), -1)
    crit = MaskedGroupedCrossEntropy(SCHEMA)
    filled = fill_labels(crit, lg, y, mode="hard", threshold=0.8)
    for name in SCHEMA.names:
        conf = torch.softmax(lg[name], 1).max(1).values
        assert torch.equal(filled[name][1] > 0, conf >= 0.8)
        assert 0 < int((conf >= 0.8).sum()) < 64  # the threshold really splits this batch


def test_the_teacher_is_read_as_the_loss_reads_the_student():
    # With logit adjustment the loss fits softmax(logits + tau log prior) to the labels, so the
    # teacher's confidence is read the same way; a sigmoid loss reads sigmoids.
    lg = teacher(batch=32, scale=1.0)
    y = torch.full((32, 3), -1)
    off = {"a": logit_adjustment(torch.tensor([98, 1, 1]), 1.0)}
    adjusted = fill_labels(MaskedGroupedCrossEntropy(SCHEMA, logit_offsets=off), lg, y, mode="hard", threshold=0.9)
    plain = fill_labels(MaskedGroupedCrossEntropy(SCHEMA), lg, y, mode="hard", threshold=0.9)
    assert torch.all(adjusted["a"][0].argmax(1)[adjusted["a"][1] > 0] == 0)  # the prior's value wins
    assert adjusted["a"][1].sum() > plain["a"][1].sum()
    sig = fill_labels(MaskedSigmoidBCE(SCHEMA), lg, y, mode="soft", threshold=0.0)
    assert torch.allclose(sig["c"][0], torch.sigmoid(lg["c"]))


def test_the_curriculum_lowers_the_threshold_from_one_to_the_final_value():
    cfg = TrainConfig(epochs=5, ema=True, complete="hard", complete_threshold=0.6, complete_start=1.0)
    assert curriculum_threshold(cfg, 0.0) == curriculum_threshold(cfg, 0.99) == float("inf")  # nothing yet
    steps = [curriculum_threshold(cfg, e) for e in (1.0, 2.0, 3.0, 4.0, 5.0)]
    assert steps == pytest.approx([1.0, 0.9, 0.8, 0.7, 0.6])
    assert curriculum_threshold(TrainConfig(epochs=5), 4.0) == float("inf")  # completion off
