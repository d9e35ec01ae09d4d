"""Multi-label groups in training: masked per-value BCE, weights, logit adjustment, completion, thresholds, resume."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attrtag.data.manifest import label_counts, read_manifest, value_totals
from attrtag.evaluation.multilabel import MIN_POSITIVES, average_precision, best_f1_threshold, choose_thresholds
from attrtag.model import load_checkpoint
from attrtag.schema import Schema
from attrtag.training.completion import fill_labels
from attrtag.training.config import TrainConfig
from attrtag.training.loop import train
from attrtag.training.loss import (
    MaskedGroupedCrossEntropy, binary_logit_adjustment, positive_weights,
)
from tests.helpers import make_multilabel_dataset

# An exclusive group of 3 and a multi-label group of 5: the target row is [a, m, m0..m4].
SCHEMA = Schema.from_dict({"a": ["x", "y", "z"], "m": {"kind": "multi", "values": ["p", "q", "r", "s", "t"]}})
T = torch.tensor([
    [0, -1, 1, 0, -1, -1, 0],
    [2, -1, 0, 0, 0, 0, 0],
    [-1, -1, -1, 1, 1, -1, -1],
    [1, -1, -1, -1, -1, -1, -1],
    [-1, -1, 1, 1, 0, 1, 0],
    [0, -1, 0, -1, 1, -1, 1],
])


def logits(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(6, 3, generator=g, requires_grad=True), "m": torch.randn(6, 5, generator=g, requires_grad=True)}


def test_a_multi_label_group_is_bce_over_its_known_values_only() -> None:
    lg = logits()
    out = MaskedGroupedCrossEntropy(SCHEMA)(lg, T)
    known = T[:, 2:] >= 0
    ref = F.binary_cross_entropy_with_logits(lg["m"][known], T[:, 2:][known].float())
    assert torch.allclose(out["m"], ref) and torch.allclose(out["loss"], out["a"] + out["m"])
    keep = T[:, 0] >= 0
    assert torch.allclose(out["a"], F.cross_entropy(lg["a"][keep], T[keep, 0]))
    out["loss"].backward()
    unknown_rows = ~known.any(1)  # row 3 knows no value: its logits get no gradient
    assert torch.count_nonzero(lg["m"].grad[unknown_rows]) == 0 and torch.count_nonzero(lg["m"].grad[0, 2:4]) == 0


def test_no_known_value_is_an_exact_zero_that_keeps_the_logits_in_the_graph() -> None:
    lg = logits()
    t = T.clone()
    t[:, 2:] = -1
    out = MaskedGroupedCrossEntropy(SCHEMA)(lg, t)
    assert out["m"].item() == 0.0 and math.isfinite(out["loss"].item())
    out["loss"].backward()
    assert lg["m"].grad is not None and torch.count_nonzero(lg["m"].grad) == 0


def test_positive_weights_group_weights_and_logit_offsets() -> None:
    present, known = torch.tensor([1, 9, 0, 4, 10]), torch.tensor([10, 10, 10, 4, 10])
    pw = positive_weights(present, known)
    assert torch.allclose(pw, torch.tensor([3.0, 1 / 3, 1.0, 1.0, 1.0]))  # sqrt(neg/pos); 1 without both
    off = binary_logit_adjustment(present, known, 0.5)
    assert torch.allclose(off, 0.5 * torch.log(torch.tensor([2 / 10, 10 / 2, 1 / 11, 5 / 1, 11 / 1])))
    lg = logits()
    crit = MaskedGroupedCrossEntropy(SCHEMA, group_weights={"m": 2.0}, class_weights={"m": pw}, logit_offsets={"m": off})
    known_m = T[:, 2:] >= 0
    per = F.binary_cross_entropy_with_logits(lg["m"] + off, T[:, 2:].clamp(min=0).float(), pos_weight=pw,
                                             reduction="none")
    assert torch.allclose(crit(lg, T)["m"], 2.0 * per[known_m].sum() / known_m.sum())
    assert torch.allclose(crit.probabilities("m", lg["m"]), torch.sigmoid(lg["m"] + off))


def test_shares_over_global_counts_add_up_with_filled_values() -> None:
    crit = MaskedGroupedCrossEntropy(SCHEMA)
    lg = logits()
    soft = torch.rand(6, 5, generator=torch.Generator().manual_seed(1))
    w = ((T[:, 2:] == -1) & (soft > 0.5)).float() * 0.5
    filled = {"m": (soft, w)}
    whole = crit(lg, T, filled=filled)
    den = crit.denominators(T[:3], {"m": (soft[:3], w[:3])}) + crit.denominators(T[3:], {"m": (soft[3:], w[3:])})
    parts = [crit({n: v[r] for n, v in lg.items()}, T[r], den, {"m": (soft[r], w[r])})
             for r in (slice(0, 3), slice(3, 6))]
    assert torch.allclose(parts[0]["loss"] + parts[1]["loss"], whole["loss"])
    known = (T[:, 2:] >= 0).float()
    given = F.binary_cross_entropy_with_logits(lg["m"], T[:, 2:].clamp(min=0).float(), reduction="none")
    filled_bce = F.binary_cross_entropy_with_logits(lg["m"], soft, reduction="none")
    assert torch.allclose(whole["m"], ((given * known).sum() + (w * filled_bce).sum()) / (known.sum() + w.sum()))


def test_completion_fills_only_unknown_values_the_teacher_is_sure_of() -> None:
    crit = MaskedGroupedCrossEntropy(SCHEMA)
    teacher = {"a": torch.zeros(6, 3), "m": torch.tensor([[4.0, -4.0, 0.1, -0.1, 4.0]] * 6)}  # p ~ .98 .02 .52 .48 .98
    out = fill_labels(crit, teacher, T, mode="hard", threshold=0.9, weight=0.5)
    probs, weight = out["m"]
    sure = torch.tensor([True, True, False, False, True])
    assert torch.equal(weight > 0, (T[:, 2:] == -1) & sure) and set(weight.unique().tolist()) <= {0.0, 0.5}
    assert probs[0].tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]  # hard: present or absent
    soft, _ = fill_labels(crit, teacher, T, mode="soft", threshold=0.9)["m"]
    assert torch.allclose(soft, torch.sigmoid(teacher["m"]))


def test_average_precision_and_the_best_f1_threshold_by_hand() -> None:
    scores = np.array([0.9, 0.8, 0.8, 0.6, 0.3, 0.1])
    y = np.array([1, 0, 1, 1, 0, 0], bool)
    # Distinct scores 0.9 (1/1), 0.8 (2/3), 0.6 (3/4): AP = 1/3*1 + 1/3*2/3 + 1/3*3/4
    assert average_precision(scores, y) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert average_precision(scores, np.zeros(6, bool)) is None
    # F1 at cuts 0.9, 0.8, 0.6, 0.3, 0.1: 2/4, 4/6, 6/7, 6/8, 6/9 -> best keeps 0.6, halfway to 0.3
    assert best_f1_threshold(scores, y) == pytest.approx(0.45)


def test_thresholds_are_chosen_where_there_are_enough_positives_and_listed_where_not() -> None:
    rng = np.random.default_rng(0)
    n = 60
    targets = np.full((n, SCHEMA.target_width), -1)
    targets[:, 2:] = (rng.random((n, 5)) < 0.3).astype(int)
    targets[:, 4] = 0
    targets[:MIN_POSITIVES - 1, 4] = 1  # value r: too few positives
    targets[::4, 5] = -1  # value s: some unknown
    probs = {"m": np.clip(targets[:, 2:] * 0.6 + rng.random((n, 5)) * 0.4, 0, 1), "a": np.full((n, 3), 1 / 3)}
    chosen = choose_thresholds(SCHEMA, probs, targets, chosen_on="test")
    assert chosen["fallback"] == {"m": ["r"]} and set(chosen["groups"]["m"]) == {"p", "q", "s", "t"}
    assert all(0.3 < t < 0.7 for t in chosen["groups"]["m"].values())  # between the two score bands


FAST = dict(backbone="test_resnet", image_size=32, batch_size=16, lr=5e-3, workers=0, warmup_epochs=0.5)


@pytest.fixture(scope="module")
def multi_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_multilabel_dataset(tmp_path_factory.mktemp("multi"), 160)


def _train(data: tuple[Path, Path], out: Path, **options: object):
    schema = Schema.load(data[0])
    return train(TrainConfig.from_dict({**FAST, **options}), schema, read_manifest(data[1], schema), out)


def test_training_stores_counts_totals_and_val_thresholds_in_the_card(multi_data, tmp_path) -> None:
    result = _train(multi_data, tmp_path / "run", epochs=2)
    card = load_checkpoint(result.best)["card"]
    schema = Schema.load(multi_data[0])
    train_samples = read_manifest(multi_data[1], schema).split("train")
    assert card.label_counts == label_counts(schema, train_samples) and card.label_totals == value_totals(schema, train_samples)
    assert card.label_totals["marks"][0] >= card.label_counts["marks"][0] > 0
    chosen = card.value_thresholds
    assert "val split" in chosen["chosen_on"] and set(chosen["groups"].get("marks", {})) | set(
        chosen["fallback"].get("marks", [])) == {"dot", "bar", "ring"}
    last = result.history[-1]
    assert {"val_map/marks", "val_f1/marks", "val_acc/marks", "val_n/marks"} <= set(last)


def test_every_learning_option_resumes_exactly_with_a_multi_label_group(multi_data, tmp_path) -> None:
    from tests.training.test_loop import Killed, kill_after

    options = dict(ema=True, ema_decay=0.9, complete="soft", complete_start=1.0, complete_threshold=0.4,
                   logit_adjust=1.0, class_weights=True, group_balance="log", epochs=3)
    schema = Schema.load(multi_data[0])
    manifest = read_manifest(multi_data[1], schema)
    cfg = TrainConfig.from_dict({**FAST, **options})
    straight = train(cfg, schema, manifest, tmp_path / "a")
    with pytest.raises(Killed):
        train(cfg, schema, manifest, tmp_path / "b", on_epoch=kill_after(1))
    resumed = train(cfg, schema, manifest, tmp_path / "b", resume=tmp_path / "b" / "last.pt")
    ca, cb = load_checkpoint(straight.last), load_checkpoint(resumed.last)
    for key in ("model", "training_model"):
        for k in ca[key]:
            assert torch.allclose(ca[key][k].float(), cb[key][k].float(), atol=1e-6), (key, k)
    assert [h["train_loss"] for h in straight.history] == pytest.approx([h["train_loss"] for h in resumed.history])
    assert straight.history[-1]["filled/marks"] > 0  # unknown values were filled after the first epoch
    assert ca["card"].value_thresholds == cb["card"].value_thresholds
