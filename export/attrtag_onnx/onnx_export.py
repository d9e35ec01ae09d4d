"""Deprecated location: the exporter lives in :mod:`attrtag_onnx.export`."""
import warnings

from .export import DEFAULT_OPSET, ExportError, ExportReport, check_against_torch, export_onnx  # noqa: F401
from .fp16 import convert_to_fp16  # noqa: F401

warnings.warn("attrtag_onnx.onnx_export was renamed attrtag_onnx.export", DeprecationWarning, stacklevel=2)
