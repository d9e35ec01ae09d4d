"""PyTorch backend: a training checkpoint (or a model in memory) run in eval mode.

On CUDA the model runs channels-last under float16 autocast (softmax stays float32, see
:class:`attrtag.model.ProbabilityModel`); on the CPU it runs in float32. :func:`torch_device`
is the one translation of a ``--device`` string into a ``torch.device``, for training too.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..card import ModelCard
from ..errors import DeviceUnavailableError
from ..model import AttributeModel, ProbabilityModel, load_model
from .api import Placement, check_batch, empty_output, parse_device
from .temperature import apply_temperatures

_logger = logging.getLogger(__name__)


def torch_device(device: str) -> torch.device:
    """``auto`` -> CUDA when PyTorch sees a GPU, else CPU; an unusable explicit GPU is an error."""
    base, index = parse_device(device)
    if base == "tensorrt":
        raise DeviceUnavailableError(
            "`device=tensorrt` needs an exported ONNX model: run 'attrtag export --checkpoint ... --out model.onnx' "
            "and pass model.onnx"
        )
    if base == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(
            f"asked for {device} but PyTorch sees no usable CUDA GPU (torch.cuda.is_available() is False); "
            "use `device=cpu`"
        )
    return torch.device(base, index) if base == "cuda" else torch.device(base)


class TorchPredictor:
    """An :class:`AttributeModel` run by PyTorch for inference (the :class:`Predictor` contract).

    Args:
        model: the grouped model (logits per group); its ``card`` describes it.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        threads: PyTorch's intra-op threads while this predictor runs a batch; the caller's
            setting is back after each call (``torch.set_num_threads`` is process-wide).
        calibrated: apply the card's per-group temperatures (False: the raw probabilities, as
            validation needs them to fit new ones).
    """

    def __init__(self, model: AttributeModel, *, device: str = "auto", threads: int | None = None,
                 calibrated: bool = True) -> None:
        self.card: ModelCard = model.card
        self.schema = self.card.schema
        self.preprocessing = self.card.preprocessing
        self.rules = self.card.rules
        #: ``{group: T}`` applied to the outputs (empty: raw probabilities).
        self.temperatures: dict[str, float] = self.card.group_temperatures if calibrated else {}
        self.device = torch_device(device)
        self.threads = int(threads) if threads else None
        net = ProbabilityModel(model).eval()
        if self.device.type == "cuda":
            # Convolutions run fastest in NHWC with tensor cores (PyTorch channels_last guide).
            net = net.to(self.device, memory_format=torch.channels_last)
        else:
            net = net.to(self.device)
        self._net = net
        self.placement = Placement("torch", self.device.type, self.device.index or 0)
        self.providers = [f"torch:{self.device}"]
        _logger.info("PyTorch runs the model on %s", self.device)

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, device: str = "auto", threads: int | None = None,
                        calibrated: bool = True) -> "TorchPredictor":
        """Load a checkpoint written by ``attrtag train``."""
        torch_device(device)  # fail on the device before reading a large checkpoint
        return cls(load_model(path), device=device, threads=threads, calibrated=calibrated)

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``[B, 3, H, W]`` float32 -> ``{group: [B, n_group] float32}`` in schema order, at :attr:`temperatures`."""
        batch = check_batch(batch, self.preprocessing)
        if batch.shape[0] == 0:
            return empty_output(self.schema)
        x = torch.from_numpy(batch)
        self._net.eval()  # a training loop may have switched the shared model back to train()
        with torch.inference_mode(), self._own_threads():
            if self.device.type == "cuda":
                x = x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=torch.float16):
                    probs = self._net(x)
            else:
                probs = self._net(x.to(self.device))
        out = {name: p.float().cpu().numpy() for name, p in zip(self.schema.names, probs)}
        return apply_temperatures(out, self.schema, self.temperatures) if self.temperatures else out

    @contextlib.contextmanager
    def _own_threads(self) -> Iterator[None]:
        """``threads`` for the block, then the caller's count again (0.3 us a call)."""
        before = torch.get_num_threads()
        if not self.threads or self.threads == before:
            yield
            return
        torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def __repr__(self) -> str:
        return f"TorchPredictor({self.card.backbone!r}, providers={self.providers})"


