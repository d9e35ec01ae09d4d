"""An exponential moving average of the weights (timm's ``ModelEmaV3``), and where it is stored.

With ``--ema`` the average is what the run produces: validation scores it, ``best.pt`` is chosen
by its score, and a checkpoint's ``model`` entry holds its weights, so ``attrtag evaluate``,
``export``, ``tag`` and :func:`attrtag.load` use them without knowing about EMA. The weights
the optimizer trains are stored beside them as ``training_model`` (only ``--resume`` reads
them), and the model card's ``training`` entry says ``"weights": "ema"``.

The decay follows timm's warm-up (``1 - (1 + step) ** -0.75``, capped at ``ema_decay``): a
fixed 0.999 would keep most of the random initialisation through the few hundred steps of a
short run; timm recommends power 3/4 for runs of fewer than a million steps.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..model import AttributeModel
from .config import TrainConfig

#: timm's ``ModelEmaV3`` warm-up power for runs "you plan to train for less" (its docstring).
WARMUP_POWER = 3 / 4


def make_ema(cfg: TrainConfig, model: AttributeModel) -> Any:
    """A ``timm.utils.ModelEmaV3`` of ``model`` (parameters and buffers), or None without ``cfg.ema``."""
    if not cfg.ema:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True, warmup_power=WARMUP_POWER)


def output_model(model: AttributeModel, ema: Any) -> AttributeModel:
    """The model a run validates and saves as its weights: the EMA's when there is one."""
    if ema is None:
        return model
    ema.module.card = model.card  # the copy was taken before the card got its training entries
    return ema.module


def restore(model: nn.Module, ema: Any, ckpt: dict[str, Any]) -> None:
    """Load a checkpoint's trained weights into ``model`` and its average into ``ema``."""
    model.load_state_dict(ckpt.get("training_model", ckpt["model"]))
    if ema is not None:
        ema.module.load_state_dict(ckpt["model"])


@torch.no_grad()
def teacher_logits(ema: Any, images: torch.Tensor, *, amp: bool) -> dict[str, torch.Tensor]:
    """The EMA model's logits for ``images`` in eval mode (batch-norm running statistics)."""
    ema.module.eval()
    with torch.autocast(device_type=images.device.type, dtype=torch.float16, enabled=amp):
        return ema.module(images)
