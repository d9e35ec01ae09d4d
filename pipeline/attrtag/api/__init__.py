"""The Python API, the one way in: the ``attrtag`` commands parse, call these, and print.

::

    import attrtag

    tagger = attrtag.load("model.onnx")              # or a training checkpoint (best.pt)
    records = tagger.tag(["photos/", "extra.jpg"])   # the records `attrtag tag` writes
    records = tagger.tag(pil_image)                  # PIL images and RGB uint8 arrays too
    probs = tagger.predict(images)                   # {group: (N, n_values)} probabilities
    summary = tagger.tag_to("tags.jsonl", "photos/") # `attrtag tag`: resumable, every image once

    tagger = attrtag.load("model.onnx", rules="rules.yaml")   # adds class fields
    result = attrtag.evaluate("model.onnx", "manifest.csv", split="test")
    run = attrtag.train("schema.yaml", "manifest.csv", "runs/exp1", backbone="resnet18", epochs=5)
    attrtag.export(run.best, "model.onnx")

Records are dicts in the layout of ``datasets/OUTPUT.md``. :mod:`.tagger` tags,
:mod:`.models` trains, evaluates, calibrates and exports, :mod:`.tags` works on tag files.
"""
from __future__ import annotations

import importlib
from typing import Any

# Loaded on first use (PEP 562): `attrtag tag` pays for the tagging session, not for training,
# evaluation or the review formats.
_WHERE = {
    "Tagger": "tagger", "TagSummary": "tagger", "load": "tagger",
    "calibrate": "models", "evaluate": "models", "export": "models", "train": "models", "train_config": "models",
    "ClassifySummary": "tags", "classify": "tags", "from_labelstudio": "tags", "report": "tags",
    "suggest_rules": "tags", "to_fiftyone": "tags", "to_labelstudio": "tags",
    "audit": "labels", "report_suspects": "labels", "suspects_to_labelstudio": "labels",
    "corrected_manifest": "labels",
}
__all__ = ["Ray", *_WHERE]


def __getattr__(name: str) -> Any:
    if name == "Ray":
        from ..tagging.ray_engine import Ray

        return Ray
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
