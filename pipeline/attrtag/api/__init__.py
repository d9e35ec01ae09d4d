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
from ..tagging.ray_engine import Ray
from .models import calibrate, evaluate, export, train, train_config
from .tagger import TagSummary, Tagger, load
from .tags import ClassifySummary, classify, from_labelstudio, report, suggest_rules, to_fiftyone, to_labelstudio

__all__ = [
    "ClassifySummary", "Ray", "TagSummary", "Tagger", "calibrate", "classify", "evaluate", "export",
    "from_labelstudio", "load", "report", "suggest_rules", "to_fiftyone", "to_labelstudio",
    "train", "train_config",
]
