"""Running a model: the predictor contract, its two backends, and :func:`open_predictor`.

ONNX files run on ONNX Runtime (:mod:`.onnx_backend`, torch is never imported on that path);
training checkpoints run on PyTorch (:mod:`.torch_backend`); which one a file is comes from
its first bytes (:mod:`.model_file`), and any other file is refused saying what it is. Both
fulfil :class:`~.api.Predictor` and report where they really run in ``.placement`` (and in the
runtime's own words in ``.providers``). Importing this package imports neither torch nor
onnxruntime.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import DeviceUnavailableError
from .api import DEVICES, Placement, Predictor, check_batch, parse_device
from .model_file import ONNX, model_kind, read_card

__all__ = [
    "DEVICES", "DeviceUnavailableError", "Placement", "Predictor", "check_batch", "model_kind", "open_predictor",
    "parse_device", "read_card",
]


def open_predictor(
    model_path: str | Path,
    *,
    device: str = "auto",
    batch_size_hint: int | None = None,
    trt_cache_dir: str | Path | None = None,
    threads: int | None = None,
    kind: str | None = None,
    calibrated: bool = True,
) -> Predictor:
    """Load an exported ``.onnx`` model or a training checkpoint for inference.

    Args:
        model_path: ``model.onnx`` (ONNX Runtime, torch not imported) or a checkpoint
            (``best.pt``; PyTorch).
        device: ``auto`` (best available), ``cpu``, ``cuda`` (``cuda:N``) or ``tensorrt``
            (ONNX only). An explicit GPU device that cannot be used is an error, never a silent
            CPU run.
        batch_size_hint: the batch size you will usually pass (TensorRT builds its engine
            profile for it; ignored by the other backends).
        trt_cache_dir: TensorRT engine cache folder (default ``~/.cache/attrtag/trt``).
        threads: CPU threads for inference (default: the backend's own choice).
        kind: :func:`.model_file.model_kind` of the file when the caller has read it already.
        calibrated: apply the per-group temperatures the model card stores (the default);
            False: the raw probabilities.

    Returns:
        A :class:`Predictor`.

    Raises:
        CheckpointError: missing or unreadable file, not a model (what it is instead, from its
            first bytes: :func:`.model_file.model_kind`), not an attrtag model.
        DeviceUnavailableError: ``device`` names a GPU backend that cannot run here.
    """
    path = Path(model_path)
    parse_device(device)
    if (kind or model_kind(path)) == ONNX:
        from .onnx_backend import OnnxModel  # lazy: this path must not import torch

        return OnnxModel(
            path, device=device, batch_size_hint=batch_size_hint, trt_cache_dir=trt_cache_dir, threads=threads,
            calibrated=calibrated,
        )
    from .torch_backend import TorchPredictor

    return TorchPredictor.from_checkpoint(path, device=device, threads=threads, calibrated=calibrated)
