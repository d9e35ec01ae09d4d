"""Deprecated location: the ONNX Runtime backend lives in :mod:`attrtag.runtime.onnx_backend`."""
import warnings

from attrtag.runtime.onnx_backend import OnnxModel  # noqa: F401

warnings.warn(
    "attrtag_onnx.runtime moved to attrtag.runtime.onnx_backend (OnnxModel); import it from there",
    DeprecationWarning,
    stacklevel=2,
)
