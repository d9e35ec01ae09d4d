"""One interface for running a model on preprocessed batches: an ONNX file or a training checkpoint.

:func:`open_predictor` picks the backend from the file: ``.onnx`` runs on ONNX Runtime
(:class:`attrtag_onnx.runtime.OnnxModel`, no torch import on that path), anything else is read
as a training checkpoint and runs on PyTorch (:class:`TorchPredictor`). Both return
``{group: probabilities [B, n_group] float32}`` in schema order and report the devices really in
use in ``.providers``.

Importing this module imports neither torch nor onnxruntime.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from .errors import AttrtagError, CheckpointError
from .preprocess import Preprocessing
from .schema import Schema

if TYPE_CHECKING:
    import torch

_logger = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "tensorrt")


class DeviceUnavailableError(AttrtagError, RuntimeError):
    """An explicitly requested device (``cuda``, ``tensorrt``) cannot be used here."""


@runtime_checkable
class Predictor(Protocol):
    """A loaded model: preprocessed float32 batches in, per-group probabilities out.

    Attributes:
        schema: groups and values; output dict keys are ``schema.names`` in order.
        preprocessing: how to turn an RGB image into one ``[3, H, W]`` row of the batch.
        providers: what really runs it, best first: ONNX Runtime provider names
            (``["CUDAExecutionProvider", "CPUExecutionProvider"]``) or ``["torch:cuda:0"]``.
        rules: class rules embedded in the model (``{"classes": {...}}``) or ``None``.
    """

    schema: Schema
    preprocessing: Preprocessing
    providers: list[str]
    rules: dict[str, Any] | None

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``[B, 3, H, W]`` float32 -> ``{group: [B, n_group] float32}``."""
        ...


def open_predictor(
    model_path: str | Path,
    *,
    device: str = "auto",
    batch_size_hint: int | None = None,
    trt_cache_dir: str | Path | None = None,
    threads: int | None = None,
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

    Returns:
        A :class:`Predictor`.

    Raises:
        CheckpointError: missing or unreadable file, not an attrtag model.
        DeviceUnavailableError: ``device`` names a GPU backend that cannot run here.
    """
    path = Path(model_path)
    base = device.split(":", 1)[0]
    if base not in DEVICES:
        raise AttrtagError(f"--device {device}: not a device (use {', '.join(DEVICES)}, or cuda:N)")
    if not path.is_file():
        raise CheckpointError(f"{path}: model file not found (expected an exported .onnx or a checkpoint .pt)")
    if path.suffix.lower() == ".onnx":
        from attrtag_onnx.runtime import OnnxModel  # lazy: this path must not import torch

        return OnnxModel(
            path, device=device, batch_size_hint=batch_size_hint, trt_cache_dir=trt_cache_dir, threads=threads
        )
    return TorchPredictor.from_checkpoint(path, device=device, threads=threads)


def check_batch(batch: Any, preprocessing: Preprocessing) -> np.ndarray:
    """The batch as a C-contiguous float32 ``[B, 3, H, W]`` array, or an error saying what is wrong.

    Args:
        batch: the array passed to a predictor.
        preprocessing: gives the expected ``(H, W)``.

    Returns:
        ``batch`` itself when it already fits, else a float32 copy.

    Raises:
        AttrtagError: not an array, wrong rank, channels or size.
    """
    if not isinstance(batch, np.ndarray):
        raise AttrtagError(f"expected a numpy array [B, 3, H, W], got {type(batch).__name__}")
    h, w = preprocessing.input_size
    if batch.ndim != 4 or tuple(batch.shape[1:]) != (3, h, w):
        raise AttrtagError(
            f"expected a batch of shape [B, 3, {h}, {w}] (the model's preprocessing), got {list(batch.shape)}; "
            "build rows with the predictor's .preprocessing"
        )
    if not np.issubdtype(batch.dtype, np.floating):
        raise AttrtagError(f"expected float32 input (normalised by .preprocessing), got dtype {batch.dtype}")
    return np.ascontiguousarray(batch, dtype=np.float32)


class TorchPredictor:
    """A training checkpoint run by PyTorch in eval mode (same interface as ``OnnxModel``).

    On CUDA the model runs channels-last under float16 autocast (softmax stays float32, see
    :class:`attrtag.model.ProbabilityModel`); on the CPU it runs in float32.
    """

    def __init__(
        self,
        model: "torch.nn.Module",
        schema: Schema,
        preprocessing: Preprocessing,
        *,
        device: str = "auto",
        rules: dict[str, Any] | None = None,
        threads: int | None = None,
    ) -> None:
        """Wrap an :class:`attrtag.model.AttributeModel`.

        Args:
            model: the grouped model (logits per group); wrapped in ``ProbabilityModel`` here.
            schema: its schema.
            preprocessing: its preprocessing.
            device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
            rules: class rules to expose as ``.rules``.
            threads: ``torch.set_num_threads`` (process-wide) when given.
        """
        import torch

        from .model import ProbabilityModel

        self.schema = schema
        self.preprocessing = preprocessing
        self.rules = rules
        self.device = _torch_device(device)
        if threads:
            torch.set_num_threads(int(threads))
        net = ProbabilityModel(model).eval()
        if self.device.type == "cuda":
            # Convolutions run fastest in NHWC with tensor cores (PyTorch channels_last guide).
            net = net.to(self.device, memory_format=torch.channels_last)
        else:
            net = net.to(self.device)
        self._net = net
        self.providers = [f"torch:{self.device}"]
        _logger.info("PyTorch runs the model on %s", self.device)

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, *, device: str = "auto", threads: int | None = None
    ) -> "TorchPredictor":
        """Load a checkpoint written by ``attrtag train``.

        Args:
            path: the checkpoint file.
            device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
            threads: CPU threads (``torch.set_num_threads``) when given.

        Returns:
            The predictor; ``.rules`` is the checkpoint's ``rules`` entry when it has one.
        """
        from .checkpoint import load_checkpoint
        from .model import model_from_checkpoint

        # Fail on the device before reading a large checkpoint.
        _torch_device(device)
        ckpt = load_checkpoint(path)
        model, prep = model_from_checkpoint(ckpt, source=str(path))
        rules = ckpt.get("rules") if isinstance(ckpt.get("rules"), dict) else None
        return cls(model, model.schema, prep, device=device, rules=rules, threads=threads)

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``[B, 3, H, W]`` float32 -> ``{group: [B, n_group] float32}`` in schema order."""
        import torch

        batch = check_batch(batch, self.preprocessing)
        if batch.shape[0] == 0:
            return {g.name: np.zeros((0, len(g)), np.float32) for g in self.schema}
        x = torch.from_numpy(batch)
        with torch.inference_mode():
            if self.device.type == "cuda":
                x = x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=torch.float16):
                    probs = self._net(x)
            else:
                probs = self._net(x)
        return {name: p.float().cpu().numpy() for name, p in zip(self.schema.names, probs)}


def _torch_device(device: str) -> "torch.device":
    """``auto`` -> CUDA when PyTorch sees a GPU, else CPU; an unusable explicit GPU is an error."""
    import torch

    base = device.split(":", 1)[0]
    if base == "tensorrt":
        raise DeviceUnavailableError(
            "--device tensorrt needs an exported ONNX model: run 'attrtag export --checkpoint ... --out model.onnx' "
            "and pass model.onnx"
        )
    if base == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(
            f"asked for {device} but PyTorch sees no usable CUDA GPU (torch.cuda.is_available() is False); "
            "use --device cpu"
        )
    try:
        return torch.device(device)
    except RuntimeError:
        raise AttrtagError(f"--device {device}: not a device (use auto, cpu, cuda or cuda:N)") from None
