"""Tagging folders of images: inputs, the engine, records, the output header and files.

Torch-free with an ``.onnx`` model. The output format is specified in ``datasets/OUTPUT.md``.
"""
from .engine import LocalEngine, TagWorker, predict_records, tag_paths
from .files import TagWriter, open_output
from .header import OutputMeta, model_fingerprint, output_format
from .inputs import expand_inputs
from .records import CLASS_FIELDS, UNKNOWN, RecordLayout, TagRecord
from .stream import iter_output, read_output

__all__ = [
    "CLASS_FIELDS", "UNKNOWN", "LocalEngine", "OutputMeta", "RecordLayout", "TagRecord", "TagWorker", "TagWriter",
    "expand_inputs", "iter_output", "model_fingerprint", "open_output", "output_format", "predict_records",
    "read_output", "tag_paths",
]
