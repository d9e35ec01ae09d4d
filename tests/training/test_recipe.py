"""The fine-tuning recipe: layer-wise learning-rate decay and head-only epochs (issue 20)."""
import pytest
import torch

from attrtag.model.model import build_model
from attrtag.schema import Group, Schema
from attrtag.training.config import TrainConfig
from attrtag.training.recipe import make_optimizer, make_scheduler

SCHEMA = Schema((Group("colour", ("red", "green", "blue")), Group("shape", ("round", "square", "long", "flat", "odd"))))


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(SCHEMA, "test_resnet", image_size=32)


def _lr_of(optimizer: torch.optim.Optimizer, param: torch.nn.Parameter) -> float:
    return next(g["lr"] for g in optimizer.param_groups if any(p is param for p in g["params"]))


def test_layer_decay_gives_the_head_lr_and_the_stem_the_least():
    model = _model()
    cfg = TrainConfig(backbone="test_resnet", lr=1e-2, layer_decay=0.5)
    opt = make_optimizer(cfg, model)
    stem = model.backbone.conv1[0].weight
    top = list(model.backbone.layer4.parameters())[0]
    head = next(model.head.parameters())
    assert _lr_of(opt, head) == pytest.approx(1e-2)
    assert _lr_of(opt, stem) < _lr_of(opt, top) < _lr_of(opt, head)
    # test_resnet: stem, layer1..layer4, then the head: one halving per step down.
    assert _lr_of(opt, top) == pytest.approx(1e-2 * 0.5)
    assert _lr_of(opt, stem) == pytest.approx(1e-2 * 0.5 ** 5)
    # Every parameter is optimised exactly once, norms and biases without weight decay.
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    assert all(g["weight_decay"] == 0.0 for g in opt.param_groups if all(p.ndim <= 1 for p in g["params"]))


def test_by_default_every_layer_learns_at_lr_and_the_card_records_only_what_differs():
    plain = TrainConfig(backbone="test_resnet", pretrained="w.pth")  # fine-tuning: still one lr (measured best)
    assert {g["lr"] for g in make_optimizer(plain, _model()).param_groups} == {plain.lr}
    assert "layer_decay" not in plain.learning_options() and "head_epochs" not in plain.learning_options()
    tuned = TrainConfig(backbone="test_resnet", pretrained="w.pth", layer_decay=0.6, head_epochs=0.5)
    assert tuned.learning_options()["layer_decay"] == 0.6 and tuned.learning_options()["head_epochs"] == 0.5
    assert TrainConfig.from_dict(tuned.to_dict()) == tuned  # a checkpoint's config gives the same run back


def test_head_epochs_hold_the_backbone_then_warm_it_up():
    model = _model()
    cfg = TrainConfig(backbone="test_resnet", lr=1e-2, head_epochs=2, warmup_epochs=1, epochs=4, layer_decay=1.0)
    opt = make_optimizer(cfg, model)
    sched = make_scheduler(cfg, opt, steps_per_epoch=5)
    before = {k: v.detach().clone() for k, v in model.backbone.named_parameters()}
    x, lrs = torch.randn(4, 3, 32, 32), []
    for _ in range(10):  # the two head-only epochs
        loss = sum(v.logsumexp(1).sum() for v in model(x).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        lrs.append({g["backbone"]: g["lr"] for g in opt.param_groups})
    assert all(r[True] == 0.0 and r[False] > 0 for r in lrs[:-1])
    after = dict(model.backbone.named_parameters())
    assert all(torch.equal(before[k], after[k]) for k in before)  # weight decay at lr 0 moves nothing either
    assert 0 < lrs[-1][True] < cfg.lr  # step 10: the backbone's warm-up has begun


def test_head_only_steps_compute_no_backbone_gradients_and_later_ones_do():
    from attrtag.training.recipe import hold_idle_backbone

    model = _model()
    cfg = TrainConfig(backbone="test_resnet", lr=1e-2, head_epochs=1, warmup_epochs=0, epochs=2, layer_decay=1.0)
    opt = make_optimizer(cfg, model)
    sched = make_scheduler(cfg, opt, steps_per_epoch=2)
    hold_idle_backbone(opt, distributed=True)  # step 0, backbone at lr 0: DDP wants every gradient all the same
    assert all(p.requires_grad for p in model.parameters())
    x, seen = torch.randn(4, 3, 32, 32), []
    for _ in range(4):
        hold_idle_backbone(opt, distributed=False)
        opt.zero_grad(set_to_none=True)
        sum(v.logsumexp(1).sum() for v in model(x).values()).backward()
        seen.append((all(p.grad is None for p in model.backbone.parameters()),
                     all(p.grad is not None for p in model.head.parameters())))
        opt.step()
        sched.step()
    assert seen == [(True, True), (True, True), (False, True), (False, True)]  # backward stopped at the head
    assert all(p.requires_grad for p in model.parameters())  # the backbone learns again after its epoch
