"""attrtag_onnx: export attrtag models to ONNX (fp32, fp16, int8), checked against PyTorch.

Importing this package imports neither torch nor onnxruntime: the exporter
(:mod:`~attrtag_onnx.export`, needs torch), the float16 converter (:mod:`~attrtag_onnx.fp16`)
and the int8 quantiser (:mod:`~attrtag_onnx.quantize`) load on first use of their names. Running
an exported model is the runtime's job (:class:`attrtag.runtime.onnx_backend.OnnxModel`,
re-exported here as ``OnnxModel``).
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "export_onnx": "export",
    "ExportReport": "export",
    "check_against_torch": "export",
    "convert_to_fp16": "fp16",
    "quantize_int8": "quantize",
    "export_int8": "quantize",
    "QuantReport": "quantize",
    "write_metadata": "metadata",
    "read_metadata": "metadata",
}
_FROM_ATTRTAG = {"OnnxModel": "attrtag.runtime.onnx_backend", "ExportError": "attrtag.errors",
                 "ModelCard": "attrtag.card"}

__all__ = [*_LAZY, *_FROM_ATTRTAG]


def __getattr__(name: str) -> Any:
    # PEP 562: `from attrtag_onnx import export_onnx` imports torch only when asked for.
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in _FROM_ATTRTAG:
        return getattr(importlib.import_module(_FROM_ATTRTAG[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
