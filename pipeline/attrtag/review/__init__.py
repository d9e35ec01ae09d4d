"""Looking at tags, handing them on, bringing corrections back.

A finished tag output (any format, see ``datasets/OUTPUT.md``) becomes: a FiftyOne dataset
folder (:mod:`.fiftyone`), Label Studio tasks with predictions and a labelling config
(:mod:`.labelstudio`), or a self-contained HTML report (:mod:`.report`). A Label Studio
annotation export becomes a training manifest again (:mod:`.corrections`). The formats are
specified in ``datasets/REVIEW.md``.
"""
from .corrections import read_labelstudio_export, write_manifest
from .fiftyone import write_fiftyone
from .labelstudio import labeling_config, write_labelstudio
from .report import write_report
from .sources import TagSet, load_tags

__all__ = [
    "TagSet", "labeling_config", "load_tags", "read_labelstudio_export", "write_fiftyone", "write_labelstudio",
    "write_manifest", "write_report",
]
