"""attrtag_onnx: export attrtag models to ONNX and run them with ONNX Runtime.

Importing this package imports neither torch nor onnxruntime. The torch-free parts
(:mod:`~attrtag_onnx.metadata`, :mod:`~attrtag_onnx.runtime`) are importable here; the exporter
(:mod:`~attrtag_onnx.onnx_export`, needs torch) and the int8 quantiser
(:mod:`~attrtag_onnx.quantize`) load on first use of their names.
"""
from __future__ import annotations

import importlib
from typing import Any

from .metadata import FORMAT_VERSION, ModelMetadata, read_metadata
from .runtime import OnnxModel

_LAZY = {
    "export_onnx": "onnx_export",
    "ExportReport": "onnx_export",
    "ExportError": "onnx_export",
    "quantize_int8": "quantize",
    "export_int8": "quantize",
    "QuantReport": "quantize",
}

__all__ = ["FORMAT_VERSION", "ModelMetadata", "OnnxModel", "read_metadata", *_LAZY]


def __getattr__(name: str) -> Any:
    # PEP 562: `from attrtag_onnx import export_onnx` imports torch only when asked for.
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
