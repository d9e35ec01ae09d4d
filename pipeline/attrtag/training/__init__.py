"""Training: typed configuration (torch-free), masked grouped losses, the loop and its history.

``from attrtag.training import train, TrainConfig`` is the Python entry point; the loop imports
torch, so it loads on first use of its names.
"""
from __future__ import annotations

import importlib
from typing import Any

from .config import TrainConfig

_LAZY = {
    "train": "loop", "TrainResult": "loop", "train_step": "loop", "split_samples": "loop", "make_criterion": "recipe",
    "MaskedGroupedCrossEntropy": "loss", "MaskedSigmoidBCE": "loss",
}
__all__ = ["TrainConfig", *_LAZY]


def __getattr__(name: str) -> Any:
    # PEP 562: `from attrtag.training import TrainConfig` must not import torch.
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
