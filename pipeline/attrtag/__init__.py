"""attrtag: grouped-softmax attribute models for partially labelled images.

The Python API (see the README and :mod:`attrtag.api`): ``attrtag.load`` a model, then
``Tagger.tag`` / ``stream`` / ``tag_to`` images; ``attrtag.train``, ``evaluate``, ``calibrate`` and
``export`` models; ``classify``, ``report``, ``to_labelstudio`` ... tag files. Importing the
package is cheap and does not import torch: names load on first use (PEP 562), and the ONNX
tagging path never needs torch.
"""
from __future__ import annotations

import importlib
from typing import Any

from .errors import AttrtagError
from .schema import Group, Schema

__version__ = "0.2.0"

_API = ("load", "Tagger", "TagSummary", "Ray", "train", "evaluate", "calibrate", "export", "classify",
        "ClassifySummary", "report", "to_fiftyone", "to_labelstudio", "from_labelstudio", "suggest_rules", "audit",
        "report_suspects", "suspects_to_labelstudio", "corrected_manifest")
_LAZY = {
    **dict.fromkeys(_API, "api"),
    "ModelCard": "card", "Rules": "zeroshot.rules", "ClassScorer": "zeroshot.classifier",
    "score_classes": "zeroshot.classifier", "class_scoring": "zeroshot.scoring", "open_predictor": "runtime",
    "TrainConfig": "training.config", "read_output": "tagging.stream", "read_manifest": "data.manifest",
}
__all__ = ["AttrtagError", "Group", "Schema", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
