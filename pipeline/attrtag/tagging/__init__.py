"""Tagging folders of images: inputs, the engine, records, the output header and files.

Torch-free with an ``.onnx`` model. The output format is specified in ``datasets/OUTPUT.md``.
"""
from .engine import TagWorker, predict_records, records_to_columns, tag_paths
from .files import TagWriter, open_output, read_output
from .header import OutputMeta, model_fingerprint, output_format
from .inputs import expand_inputs
from .records import RecordLayout, TagRecord

__all__ = [
    "OutputMeta", "RecordLayout", "TagRecord", "TagWorker", "TagWriter", "expand_inputs", "model_fingerprint",
    "open_output", "output_format", "predict_records", "read_output", "records_to_columns", "tag_paths",
]
